# Loads an exported folder with transformers itself and prints the logits of the token ids
# given on the command line as JSON. Used only where transformers is installed.
import json, sys
import torch
import transformers
from transformers import AutoModelForCausalLM

# DbrxForCausalLM builds LayerNorm(bias=False), which needs torch 2.1; the project venv
# pairs transformers 4.46.3 with Debian's torch 1.13. That pair cannot build the class at
# all: exit 3 (TestTransformersRoundTrip checks DBRX with the current transformers).
model_type = json.load(open(sys.argv[1] + "/config.json")).get("model_type")
if model_type == "dbrx" and tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 1):
    print("torch %s cannot build DbrxForCausalLM (LayerNorm without bias needs torch 2.1)" % torch.__version__, file=sys.stderr)
    sys.exit(3)
try:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
except (KeyError, ValueError) as e:
    # An architecture this transformers release does not ship (Qwen3-MoE before 4.51):
    # exit 3 so the test says which check it left out, instead of failing.
    print("transformers %s has no class for this config: %s" % (transformers.__version__, e), file=sys.stderr)
    sys.exit(3)
model.eval()
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
with torch.no_grad():
    print(json.dumps(model(ids).logits.double().flatten().tolist()))
