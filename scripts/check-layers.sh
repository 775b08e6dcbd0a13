#!/usr/bin/env bash
# The layer rule of docs/ARCHITECTURE.md, checked: a module may use the modules to its right in
#   cli → server → control → endpoint → mirror → deployment → collector → hooks → assets → spec
# and the leaves (telemetry, threads, sys), which use none of these (threads may use sys).
# Fails, naming file and line, when a module names one to its left (`crate::X`, also inside a
# `crate::{X, Y}` group) or a leaf names a layer. A module's own name is always allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=(cli server control endpoint mirror deployment collector hooks assets spec)
leaves=(telemetry threads sys)
status=0
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }
is_leaf() { local l; for l in "${leaves[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }
# Every `crate::NAME` a file names, as "file:line:NAME" (groups expanded, one name a line).
uses() {
  grep -rnoE 'crate::(\{[^}]*\}|[a-z_]+)' "$@" 2>/dev/null | while IFS=: read -r file line what; do
    what=${what#crate::}
    what=${what#\{}
    what=${what%\}}
    tr ',' '\n' <<<"$what" | sed 's/^ *//; s/::.*//; s/ .*//' | grep -E '^[a-z_]+$' | sed "s|^|$file:$line:|"
  done
}
for module in "${layers[@]}" "${leaves[@]}"; do
  paths=()
  [ -d "src/$module" ] && paths+=("src/$module")
  [ -f "src/$module.rs" ] && paths+=("src/$module.rs")
  [ ${#paths[@]} -eq 0 ] && continue
  own=$(rank "$module")
  while IFS=: read -r file line name; do
    [ -z "$name" ] || [ "$name" = "$module" ] && continue
    other=$(rank "$name")
    if is_leaf "$module"; then
      if [ "$module" = threads ] && [ "$name" = sys ]; then
        continue
      fi
      if [ "$other" -ge 0 ] || is_leaf "$name"; then
        echo "check-layers: $file:$line: the leaf '$module' uses '$name'"
        status=1
      fi
    elif [ "$other" -ge 0 ] && [ "$other" -lt "$own" ]; then
      echo "check-layers: $file:$line: '$module' uses '$name', which is to its left (${layers[*]})"
      status=1
    fi
  done < <(uses "${paths[@]}")
done
# The HTTP framework stays in the planes: below `server` (and outside the CLI) nothing names
# actix; requests go down as hooks::Request with hooks::Headers.
while IFS=: read -r file line _; do
  case "$file" in src/server/*|src/cli/*|src/main.rs|src/lib.rs) continue ;; esac
  echo "check-layers: $file:$line: names actix below the server (use hooks::Request / hooks::Headers)"
  status=1
done < <(grep -rnE '(^|[^a-z_])actix(_web|_http|_server|_service|_rt)?::' src --include=*.rs | grep -vE ':[0-9]+:\s*//' || true)
[ $status -eq 0 ] && echo "check-layers: every module uses only modules to its right, the leaves no layer, and nothing below the server actix"
exit $status
