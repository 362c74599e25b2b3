"""kdlib: knowledge distillation for learned image compression, on CompressAI."""
import warnings

# CompressAI decorates a few functions with torch.jit.script, which recent torch deprecates;
# torch.backends.mkldnn.flags() (used for deterministic decoding) warns about Intel-GPU TF32.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN", category=UserWarning)

# CompressAI imports torch_geometric, which imports tqdm.auto: no ipywidgets needed for text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
