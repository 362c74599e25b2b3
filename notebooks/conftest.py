"""pytest --nbval on these notebooks: kernels on IPC sockets, and images compared too.

nbval starts each notebook's kernel on TCP ports that jupyter_client finds free and releases before
the kernel binds them, a race with any kernel starting beside it (``make test`` runs papermill's on
the other core). kdlib.notebook's kernel manager names IPC sockets for each kernel alone instead.
nbval leaves images out of its comparison unless nbdime is asked for; here an image that changes on
re-execution fails its cell like any other output (every figure is seeded and byte-stable).
"""
import nbval.kernel

from kdlib.notebook import kernel_managers

nbval.kernel.KernelManager = kernel_managers()[0]


def pytest_collection_modifyitems(items):
    for item in items:
        skip = getattr(item.parent, "skip_compare", None)
        if skip is not None:
            item.parent.skip_compare = tuple(k for k in skip if k not in ("image/png", "image/jpeg"))
