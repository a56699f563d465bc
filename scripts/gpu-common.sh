# Sourced by scripts/gpu-check and scripts/gpu-llamacpp: the interpreter and the carried packages.
# On the GPU machine python3 has torch but not xinf: the wheels carried in .whl/ (scripts/gpu-wheels) go into a
# target directory on PYTHONPATH, and xinf's own packages are built from this working tree (the wheels in
# .whl/common are the fallback). Here, .venv's python already has everything.
SITE=${GPUCHECK_SITE:-$PWD/.gpubuild/site}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONUNBUFFERED=1

gpu_install() {  # gpu_install PART...: carried wheels of .whl/common and .whl/PART, when $PY lacks xinf
  if "$PY" -c 'import xinf' 2>/dev/null; then
    echo "gpu-check: $PY has xinf already; nothing to install"
  else
    local t0=$SECONDS wheels=() part
    for part in common "$@"; do
      [ -d ".whl/$part" ] || { echo "gpu-check: .whl/$part is missing: run ./scripts/gpu-wheels here and carry it" >&2; return 1; }
      wheels+=($(ls .whl/"$part"/*.whl | grep -v '/xinf'))
    done
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" || return 1
    if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" --upgrade \
         ./core ./plugins/xinf-transformers ./plugins/xinf-llamacpp 2>/dev/null; then
      echo "gpu-check: building xinf from this tree failed; installing the carried xinf wheels" >&2
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --upgrade .whl/common/xinf*.whl || return 1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu-check: installed ${#wheels[@]} carried wheels and xinf into $SITE in $((SECONDS - t0)) s"
  fi
  export PYTHONPATH="$PWD/tools:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c 'import xinf, openai, starlette, uvicorn, msgspec; print("gpu-check: xinf from", xinf.__file__)'
}

gpu_logs() {  # gpu_logs OUTDIR HOME: the servers' and replicas' logs as one file beside the report
  tar czf "$1/logs.tar.gz" -C "$2" --exclude='cache' --exclude='*.sock' . 2>/dev/null || true
}
