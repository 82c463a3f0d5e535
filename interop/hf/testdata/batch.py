# Runs several reference scripts in one interpreter, so that torch (and transformers) are
# imported once rather than once a script: reads a JSON list of [script, folder, ids] from
# stdin, runs each script as its own command line would (sys.argv = [script, folder,
# ids]) and prints one JSON list of {"stdout", "stderr", "status"}, the status being the
# script's exit code (0 when it returned).
import contextlib, io, json, runpy, sys, traceback

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
results = []
for script, folder, ids in json.load(sys.stdin):
    out, err, status = io.StringIO(), io.StringIO(), 0
    saved = sys.argv
    sys.argv = [script, folder, ids]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, int):
            status = e.code
        elif e.code is not None:
            err.write(str(e.code))
            status = 1
    except Exception:
        traceback.print_exc(file=err)
        status = 1
    finally:
        sys.argv = saved
    results.append({"stdout": out.getvalue(), "stderr": err.getvalue(), "status": status})
json.dump(results, sys.__stdout__)
