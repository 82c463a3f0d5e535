# Loads an exported folder with transformers itself and prints the logits of the token ids
# given on the command line as JSON. Used only where transformers is installed.
import json, sys
import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
model.eval()
ids = torch.tensor([[int(t) for t in sys.argv[2].split(",")]])
with torch.no_grad():
    print(json.dumps(model(ids).logits.double().flatten().tolist()))
