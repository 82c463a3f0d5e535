package diag

// Runtime refusals (package runtime/...): E06xx. These are errors about a user's run rather
// than about a source range: a stage that does not exist, a corpus that is empty, a
// checkpoint that is corrupt. They travel as *Diagnostic errors (Runtimef, RuntimeWrap) so
// callers can test the code with CodeOf and the CLI prints the same `error[CODE]: ...` form
// as other diagnostics.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in runtimeCodes, each on its own line, in code order.

const CodeUnknownStage Code = "E0601"
const CodeNoFromCheckpoint Code = "E0602"
const CodeUnsupportedFeature Code = "E0603"
const CodeEmptyCorpus Code = "E0604"
const CodeBadDataFile Code = "E0605"
const CodeVocabTooSmall Code = "E0606"
const CodeCorruptCheckpoint Code = "E0607"
const CodeCheckpointMismatch Code = "E0608"
const CodeOutputExists Code = "E0609"
const CodeUnknownTrain Code = "E0610"
const CodeBadRunOption Code = "E0611"
const CodeBadGrowth Code = "E0612"
const CodeNonFiniteLoss Code = "E0613"
const CodeBadSafetensors Code = "E0614"
const CodeRankFailed Code = "E0615"
const CodeRunInUse Code = "E0616"
const CodeTokenizerUnreadable Code = "E0621"

var runtimeCodes = []Info{
	{CodeUnknownStage, "no stage of that name in the train block"},
	{CodeNoFromCheckpoint, "the stage's `from` stage has no final checkpoint yet"},
	{CodeUnsupportedFeature, "the CPU runtime does not implement this model feature"},
	{CodeEmptyCorpus, "the training data glob matches no usable text file"},
	{CodeBadDataFile, "a training data file cannot be read"},
	{CodeVocabTooSmall, "byte-level tokens need a vocabulary of at least 256"},
	{CodeCorruptCheckpoint, "a checkpoint file is truncated, malformed or fails its SHA-256"},
	{CodeCheckpointMismatch, "a checkpoint does not match the model (tensor names, shapes or config)"},
	{CodeOutputExists, "the output directory already holds a run (use --resume or --force)"},
	{CodeUnknownTrain, "no train block of that name"},
	{CodeBadRunOption, "a run option is out of range"},
	{CodeBadGrowth, "a stage cannot be grown from its `from` stage"},
	{CodeNonFiniteLoss, "training diverged: the loss is NaN or infinite"},
	{CodeBadSafetensors, "a safetensors file is malformed"},
	{CodeRankFailed, "a rank of a sharded run failed or a collective timed out; the other ranks stopped"},
	{CodeRunInUse, "another moec run holds the run folder (its lock names the process)"},
	{CodeTokenizerUnreadable, "a tokenizer file cannot be read, or is of a kind moec does not read (it reads BPE tokenizer.json)"},
}
