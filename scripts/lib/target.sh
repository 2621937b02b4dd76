# Sourced by the set-up scripts: with $root the repository, sets target, Cargo's target
# directory ($CARGO_TARGET_DIR or target/), made absolute, where heavy installs live.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$root/$target" ;;
esac
