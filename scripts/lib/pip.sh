# Sourced by the set-up scripts: sets pip_cmd to the first working pip, or prints
# "$1: pip is missing; install python3-pip ($2)" and exits 1.
find_pip() {
  pip_cmd=""
  for candidate in pip3 pip "python3 -m pip"; do
    if $candidate --version >/dev/null 2>&1; then
      pip_cmd="$candidate"
      return 0
    fi
  done
  echo "$1: pip is missing; install python3-pip ($2)" >&2
  exit 1
}
