// Package pyvenv finds the Python interpreter that tests check moec against: the one
// $MOEC_PYTHON names, else the project's virtual environment (`make venv`, .venv at the
// repository's root). A test whose Python package is missing skips, saying why.
package pyvenv
