// Package checkpoint saves and loads training checkpoints atomically.
//
// In: a Checkpoint (a Manifest plus model and optimizer tensors) and a parent directory.
// Out: a directory parent/step-NNNNNNNN holding model.safetensors (Hugging Face tensor
// names), optimizer.safetensors (moments, named "<param>.exp_avg" and "<param>.exp_avg_sq")
// and manifest.json (format version, train, stage, step, tokens seen, RNG and data cursor
// state, the model config, the hash of the config, and the SHA-256 and size of every file).
//
// A checkpoint is never visible half-written: files go to a temporary sibling directory,
// each file and the directory are fsynced, and only then is the directory renamed into
// place and the parent fsynced. Older checkpoints are removed only after a newer one is in
// place. Load verifies every file against the manifest and refuses a checkpoint that is
// truncated, corrupt or malformed with a coded error (E0607) naming the file and the
// expected and actual hash or size.
package checkpoint
