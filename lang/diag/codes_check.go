package diag

var checkCodes = []Info{}
