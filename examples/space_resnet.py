"""A small ResNet-56 / CIFAR-10 style search space, with schedule families like Hippo's workloads.

One step is one epoch. Dry-run it (nothing is trained) to see what sharing saves:

    hippo-dask plan examples/space_resnet.py --steps 200

The learning-rate schedules agree on long prefixes (the step schedules train at 0.1 until their
first milestone, the warm-ups share their ramp) and batch size and momentum only change late, so
the 128 trials' 25,600 requested epochs come down to about 10,600 unique ones (merge rate 2.4).
"""

import hippo_dask as hd
from hippo_dask import seq

lr = [
    seq.StepLR(0.1, gamma=0.1, milestones=[100, 150]),  # the ResNet paper's schedule, in epochs
    seq.StepLR(0.1, gamma=0.1, milestones=[80, 120]),
    seq.StepLR(0.1, gamma=0.2, milestones=[60, 120, 160]),  # the Wide-ResNet schedule
    seq.Warmup(5, 0.1, then=seq.StepLR(0.1, gamma=0.1, milestones=[95, 145])),
    seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.98)),
    seq.Cosine(0.1, t_max=200),
    seq.CosineWarmRestarts(0.1, t_0=50),
    seq.Cyclic(0.001, 0.1, step_size_up=25),
]
batch_size = [seq.Constant(128), seq.MultiStep([128, 256], milestones=[150])]
momentum = [seq.Constant(0.9), seq.MultiStep([0.9, 0.95], milestones=[150])]

space = hd.GridSpace(
    lr=lr,
    batch_size=batch_size,
    momentum=momentum,
    weight_decay=[5e-4, 1e-4],
    optimizer=["sgd", "nesterov"],
)
