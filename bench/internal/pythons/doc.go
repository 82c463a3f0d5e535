// Package pythons names the Python interpreters the benchmarks run their PyTorch peers
// under: Debian's python3, for which Debian's python3-torch (1.13) is installed, and the
// bench venv's (scripts/venv-torch.sh: the current torch release from PyPI) when present.
package pythons
