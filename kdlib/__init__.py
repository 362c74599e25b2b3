"""kdlib: knowledge distillation for learned image compression, on CompressAI."""
import warnings

# CompressAI decorates a few functions with torch.jit.script, which recent torch deprecates.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)

# CompressAI imports torch_geometric, which imports tqdm.auto: no ipywidgets needed for text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
