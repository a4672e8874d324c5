"""Dask clusters for studies: on this machine, or on SLURM through dask-jobqueue.

Every worker started here advertises one ``GPU`` (the resource each stage asks for): one worker
per GPU, or on CPU-only machines one per core (local) or per job slot (SLURM).

- :func:`local`: the embedded cluster a :class:`~hippo_dask.Study` starts without ``client=``.
- :func:`slurm`: SLURM jobs of one worker per GPU, replaced when they end, optionally adaptive.
- :func:`cuda_devices`: the CUDA devices this process may use.

Network: a Dask scheduler runs whatever code a client sends it, so whoever reaches its port
can run code on the workers. :func:`local` listens on 127.0.0.1 only (``host=`` opens it);
:func:`slurm`'s scheduler must listen on the network for its jobs, so ``security=True`` puts
scheduler, workers and client on mutual TLS. Both keep the Dask dashboard on 127.0.0.1.
"""

from hippo_dask.cluster._local import ClusterClient, cuda_devices, local

# For hippo_dask.study, not the user-facing API below: stop a client and its cluster off the
# calling thread (a study dropped without close() does it from the garbage collector).
from hippo_dask.cluster._local import close_in_background as close_in_background
from hippo_dask.cluster._slurm import slurm

__all__ = ["ClusterClient", "cuda_devices", "local", "slurm"]
