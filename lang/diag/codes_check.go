package diag

// Checker codes (compiler/check):
//
//	E02xx  names, keys, types, units, inheritance and imports
//	E03xx  cross-field rules inside a model
//	E04xx  cluster, train, stage, serve, compress and experiment rules
//	W92xx  checker warnings
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in checkCodes, each on its own line, in code order.

const CodeUnknownKey Code = "E0201"
const CodeDuplicateKey Code = "E0202"
const CodeUnknownBlock Code = "E0203"
const CodeDuplicateDecl Code = "E0204"
const CodeWrongType Code = "E0205"
const CodeMissingUnit Code = "E0206"
const CodeWrongUnit Code = "E0207"
const CodeNotInteger Code = "E0208"
const CodeUnknownName Code = "E0209"
const CodeReferenceCycle Code = "E0210"
const CodeUnknownEnum Code = "E0211"
const CodeMissingKey Code = "E0212"
const CodeNumberRange Code = "E0213"
const CodeDivisionByZero Code = "E0214"
const CodeUnknownBase Code = "E0215"
const CodeExtendsCycle Code = "E0216"
const CodeBadHeader Code = "E0217"
const CodeImportUnreadable Code = "E0218"
const CodeImportCycle Code = "E0219"
const CodeBadConstructor Code = "E0220"
const CodeOutOfRange Code = "E0221"
const CodeAbsoluteImport Code = "E0222"
const CodeBadTokenizer Code = "E0223"
const CodeInternalCheckError Code = "E0299"
const CodeHeadsDivide Code = "E0301"
const CodeKVHeadsDivide Code = "E0302"
const CodeTopKExceedsExperts Code = "E0303"
const CodeBadMoELayers Code = "E0304"
const CodeFirstDenseTooLarge Code = "E0305"
const CodePartialMLA Code = "E0306"
const CodeOddRotaryDim Code = "E0307"
const CodeShortPositionTable Code = "E0308"
const CodeLayersWithEvery Code = "E0309"
const CodeBadRoutingGroups Code = "E0310"
const CodeNoMoELayer Code = "E0311"
const CodeParamCountOverflow Code = "E0312"
const CodeBadRopeScaling Code = "E0313"
const CodeUnknownModel Code = "E0401"
const CodeUnknownCluster Code = "E0402"
const CodeUnknownDevice Code = "E0403"
const CodeUnknownFromStage Code = "E0404"
const CodeStageCycle Code = "E0405"
const CodeExpertsShrink Code = "E0406"
const CodeGrowMissing Code = "E0407"
const CodeStageExpertsOnDense Code = "E0408"
const CodeStageTopK Code = "E0409"
const CodeBadMemory Code = "E0410"
const CodeNoBudget Code = "E0411"
const CodeNoNetwork Code = "E0412"
const CodeUnknownServeStage Code = "E0413"
const CodeUnknownExperimentRef Code = "E0414"
const CodeUnknownOverride Code = "E0415"
const CodeServeNoCompress Code = "E0420"
const CodeQuantGroup Code = "E0430"
const CodeCompressKeepExperts Code = "E0431"
const CodeLastStageSize Code = "W9201"
const CodePartialBatch Code = "W9202"
const CodeEmptyFile Code = "W9203"
const CodeRaggedMicroBatch Code = "W9204"

var checkCodes = []Info{
	{CodeUnknownKey, "unknown key in a block (did you mean another key of the block?)"},
	{CodeDuplicateKey, "key written twice in the same block"},
	{CodeUnknownBlock, "unknown block kind"},
	{CodeDuplicateDecl, "duplicate declaration (two declarations of the same kind and name)"},
	{CodeWrongType, "value has the wrong type for its key"},
	{CodeMissingUnit, "a size, rate or FLOP/s value is missing its unit"},
	{CodeWrongUnit, "value has a unit where another unit or a plain number is expected"},
	{CodeNotInteger, "integer key has a non-integer value (or an inexact division)"},
	{CodeUnknownName, "unknown name in an expression"},
	{CodeReferenceCycle, "values refer to each other in a cycle"},
	{CodeUnknownEnum, "unknown enum value"},
	{CodeMissingKey, "required key is missing"},
	{CodeNumberRange, "number out of the range the checker computes with"},
	{CodeDivisionByZero, "division by zero"},
	{CodeUnknownBase, "model extends an unknown model"},
	{CodeExtendsCycle, "models extend each other in a cycle"},
	{CodeBadHeader, "header clause not allowed here (name, extends, on, from)"},
	{CodeImportUnreadable, "imported file cannot be read"},
	{CodeImportCycle, "files import each other in a cycle"},
	{CodeBadConstructor, "bad constructor: unknown constructor or too many arguments"},
	{CodeOutOfRange, "value out of range"},
	{CodeAbsoluteImport, "an import path is absolute; imports are relative to the importing file"},
	{CodeBadTokenizer, "a train block's tokenizer is neither \"bytes\" nor a usable Hugging Face tokenizer.json, or has more ids than the model's vocab"},
	{CodeInternalCheckError, "internal error in the checker (a bug in moec, not in the input)"},
	{CodeHeadsDivide, "heads must divide d_model unless head_dim is given"},
	{CodeKVHeadsDivide, "kv_heads must divide heads"},
	{CodeTopKExceedsExperts, "top_k exceeds the number of experts"},
	{CodeBadMoELayers, "explicit moe.layers out of range, unsorted or repeated"},
	{CodeFirstDenseTooLarge, "moe.first_dense must be below the number of layers"},
	{CodePartialMLA, "multi-head latent attention fields are all-or-nothing"},
	{CodeOddRotaryDim, "rotary positions need an even (rotary) head dimension"},
	{CodeShortPositionTable, "learned positions need max_position >= seq_len"},
	{CodeLayersWithEvery, "moe.layers cannot be combined with every or first_dense"},
	{CodeBadRoutingGroups, "node-limited routing: topk_groups needs groups, groups must divide experts"},
	{CodeNoMoELayer, "moe block places no MoE layer"},
	{CodeParamCountOverflow, "the model's parameter count does not fit in 64 bits (more than 9.2e18 parameters)"},
	{CodeBadRopeScaling, "a rotary-scaling key without the scaling that reads it, or a scaling on a model without rotary positions"},
	{CodeUnknownModel, "train, serve or compress refers to an unknown model"},
	{CodeUnknownCluster, "train or serve refers to an unknown cluster"},
	{CodeUnknownDevice, "cluster gpu is not in the device catalog"},
	{CodeUnknownFromStage, "stage starts from an unknown stage"},
	{CodeStageCycle, "stages start from each other in a cycle"},
	{CodeExpertsShrink, "expert count shrinks along a stage's from"},
	{CodeGrowMissing, "experts grow but the stage has no grow rule"},
	{CodeStageExpertsOnDense, "stage has experts > 1 but the model has no moe block"},
	{CodeStageTopK, "stage top_k exceeds the stage's experts"},
	{CodeBadMemory, "invalid memory strategy"},
	{CodeNoBudget, "stage has no token budget (tokens or steps)"},
	{CodeNoNetwork, "a multi-node cluster needs a network bandwidth"},
	{CodeUnknownServeStage, "serve refers to a stage its model's train does not have"},
	{CodeUnknownExperimentRef, "experiment refers to an unknown train or stage"},
	{CodeUnknownOverride, "experiment override names an unknown key"},
	{CodeServeNoCompress, "serve is compressed, but its model has no compress block"},
	{CodeQuantGroup, "a compress block's int4 group (or int4 itself) does not fit a matrix width it quantises"},
	{CodeCompressKeepExperts, "a compress block keeps more experts than the model has, fewer than top_k, or prunes a model without routed experts"},
	{CodeLastStageSize, "the last stage's experts differ from the model's moe.experts"},
	{CodePartialBatch, "tokens_per_batch is not a whole number of sequences"},
	{CodeEmptyFile, "the file declares nothing (no declaration and no import)"},
	{CodeRaggedMicroBatch, "micro_batch does not divide the sequences of a batch, so the batch runs rounded up to whole micro-batches"},
}
