package diag

// Checker codes (compiler/check). Append only: a published code keeps its meaning.
//
//	E02xx  names, keys, types, units, inheritance and imports
//	E03xx  cross-field rules inside a model
//	E04xx  cluster, train, stage, serve, compress and experiment rules
//	W92xx  checker warnings
const (
	UnknownKey           Code = "E0201"
	DuplicateKey         Code = "E0202"
	UnknownBlock         Code = "E0203"
	DuplicateDecl        Code = "E0204"
	WrongType            Code = "E0205"
	MissingUnit          Code = "E0206"
	WrongUnit            Code = "E0207"
	NotInteger           Code = "E0208"
	UnknownName          Code = "E0209"
	ReferenceCycle       Code = "E0210"
	UnknownEnum          Code = "E0211"
	MissingKey           Code = "E0212"
	NumberRange          Code = "E0213"
	DivisionByZero       Code = "E0214"
	UnknownBase          Code = "E0215"
	ExtendsCycle         Code = "E0216"
	BadHeader            Code = "E0217"
	ImportUnreadable     Code = "E0218"
	ImportCycle          Code = "E0219"
	BadConstructor       Code = "E0220"
	OutOfRange           Code = "E0221"
	AbsoluteImport       Code = "E0222"
	BadTokenizer         Code = "E0223"
	InternalCheckError   Code = "E0299"
	HeadsDivide          Code = "E0301"
	KVHeadsDivide        Code = "E0302"
	TopKExceedsExperts   Code = "E0303"
	BadMoELayers         Code = "E0304"
	FirstDenseTooLarge   Code = "E0305"
	PartialMLA           Code = "E0306"
	OddRotaryDim         Code = "E0307"
	ShortPositionTable   Code = "E0308"
	LayersWithEvery      Code = "E0309"
	BadRoutingGroups     Code = "E0310"
	NoMoELayer           Code = "E0311"
	ParamCountOverflow   Code = "E0312"
	BadRopeScaling       Code = "E0313"
	UnknownModel         Code = "E0401"
	UnknownCluster       Code = "E0402"
	UnknownDevice        Code = "E0403"
	UnknownFromStage     Code = "E0404"
	StageCycle           Code = "E0405"
	ExpertsShrink        Code = "E0406"
	GrowMissing          Code = "E0407"
	StageExpertsOnDense  Code = "E0408"
	StageTopK            Code = "E0409"
	BadMemory            Code = "E0410"
	NoBudget             Code = "E0411"
	NoNetwork            Code = "E0412"
	UnknownServeStage    Code = "E0413"
	UnknownExperimentRef Code = "E0414"
	UnknownOverride      Code = "E0415"
	ServeNoCompress      Code = "E0420"
	QuantGroup           Code = "E0430"
	CompressKeepExperts  Code = "E0431"
	LastStageSize        Code = "W9201"
	PartialBatch         Code = "W9202"
	EmptyFile            Code = "W9203"
	RaggedMicroBatch     Code = "W9204"
)

var checkCodes = []Info{
	{UnknownKey, "unknown key in a block (did you mean another key of the block?)"},
	{DuplicateKey, "key written twice in the same block"},
	{UnknownBlock, "unknown block kind"},
	{DuplicateDecl, "duplicate declaration (two declarations of the same kind and name)"},
	{WrongType, "value has the wrong type for its key"},
	{MissingUnit, "a size, rate or FLOP/s value is missing its unit"},
	{WrongUnit, "value has a unit where another unit or a plain number is expected"},
	{NotInteger, "integer key has a non-integer value (or an inexact division)"},
	{UnknownName, "unknown name in an expression"},
	{ReferenceCycle, "values refer to each other in a cycle"},
	{UnknownEnum, "unknown enum value"},
	{MissingKey, "required key is missing"},
	{NumberRange, "number out of the range the checker computes with"},
	{DivisionByZero, "division by zero"},
	{UnknownBase, "model extends an unknown model"},
	{ExtendsCycle, "models extend each other in a cycle"},
	{BadHeader, "header clause not allowed here (name, extends, on, from)"},
	{ImportUnreadable, "imported file cannot be read"},
	{ImportCycle, "files import each other in a cycle"},
	{BadConstructor, "bad constructor: unknown constructor or too many arguments"},
	{OutOfRange, "value out of range"},
	{AbsoluteImport, "an import path is absolute; imports are relative to the importing file"},
	{BadTokenizer, "a train block's tokenizer is neither \"bytes\" nor a usable Hugging Face tokenizer.json, or has more ids than the model's vocab"},
	{InternalCheckError, "internal error in the checker (a bug in moec, not in the input)"},
	{HeadsDivide, "heads must divide d_model unless head_dim is given"},
	{KVHeadsDivide, "kv_heads must divide heads"},
	{TopKExceedsExperts, "top_k exceeds the number of experts"},
	{BadMoELayers, "explicit moe.layers out of range, unsorted or repeated"},
	{FirstDenseTooLarge, "moe.first_dense must be below the number of layers"},
	{PartialMLA, "multi-head latent attention fields are all-or-nothing"},
	{OddRotaryDim, "rotary positions need an even (rotary) head dimension"},
	{ShortPositionTable, "learned positions need max_position >= seq_len"},
	{LayersWithEvery, "moe.layers cannot be combined with every or first_dense"},
	{BadRoutingGroups, "node-limited routing: topk_groups needs groups, groups must divide experts"},
	{NoMoELayer, "moe block places no MoE layer"},
	{ParamCountOverflow, "the model's parameter count does not fit in 64 bits (more than 9.2e18 parameters)"},
	{BadRopeScaling, "a rotary-scaling key without the scaling that reads it, or a scaling on a model without rotary positions"},
	{UnknownModel, "train, serve or compress refers to an unknown model"},
	{UnknownCluster, "train or serve refers to an unknown cluster"},
	{UnknownDevice, "cluster gpu is not in the device catalog"},
	{UnknownFromStage, "stage starts from an unknown stage"},
	{StageCycle, "stages start from each other in a cycle"},
	{ExpertsShrink, "expert count shrinks along a stage's from"},
	{GrowMissing, "experts grow but the stage has no grow rule"},
	{StageExpertsOnDense, "stage has experts > 1 but the model has no moe block"},
	{StageTopK, "stage top_k exceeds the stage's experts"},
	{BadMemory, "invalid memory strategy"},
	{NoBudget, "stage has no token budget (tokens or steps)"},
	{NoNetwork, "a multi-node cluster needs a network bandwidth"},
	{UnknownServeStage, "serve refers to a stage its model's train does not have"},
	{UnknownExperimentRef, "experiment refers to an unknown train or stage"},
	{UnknownOverride, "experiment override names an unknown key"},
	{ServeNoCompress, "serve is compressed, but its model has no compress block"},
	{QuantGroup, "a compress block's int4 group (or int4 itself) does not fit a matrix width it quantises"},
	{CompressKeepExperts, "a compress block keeps more experts than the model has, fewer than top_k, or prunes a model without routed experts"},
	{LastStageSize, "the last stage's experts differ from the model's moe.experts"},
	{PartialBatch, "tokens_per_batch is not a whole number of sequences"},
	{EmptyFile, "the file declares nothing (no declaration and no import)"},
	{RaggedMicroBatch, "micro_batch does not divide the sequences of a batch, so the batch runs rounded up to whole micro-batches"},
}
