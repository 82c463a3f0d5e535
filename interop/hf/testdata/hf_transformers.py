# Loads an exported folder with transformers itself and prints the logits of the token ids
# given on the command line as JSON. Used only where transformers is installed.
import json, sys
import torch
from transformers import AutoModelForCausalLM

try:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
except (KeyError, ValueError, TypeError) as e:
    # An architecture this transformers release does not ship (Qwen3-MoE before 4.51), or
    # one its torch cannot build (DBRX's LayerNorm(bias=False) needs torch 2.1; the venv
    # pairs transformers 4.46.3 with Debian's torch 1.13): exit 3 so the test says which
    # check it left out, instead of failing. The current transformers checks every family
    # in TestTransformersRoundTrip.
    import transformers
    print("transformers %s has no class for this config: %s" % (transformers.__version__, e), file=sys.stderr)
    sys.exit(3)
model.eval()
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
with torch.no_grad():
    print(json.dumps(model(ids).logits.double().flatten().tolist()))
