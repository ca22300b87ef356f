"""Validates Azure Batch REST JSON with the azure-batch SDK's models.

Usage: validate_batch_spec.py pool|job|task < spec.json

`from_dict` ignores keys it does not know, so besides `validate()` (required fields, value
constraints) the model is serialized back and must give exactly the JSON it was made from: a
misspelt or misplaced key shows up as a difference.
"""

import json
import sys

import azure.batch.models as models

KINDS = {
    "pool": models.PoolAddParameter,
    "job": models.JobAddParameter,
    "task": models.TaskAddParameter,
}


def differences(want, got, path="$"):
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            if key not in got:
                yield f"{path}.{key}: not a field the model knows (dropped)"
            elif key not in want:
                yield f"{path}.{key}: added by the model"
            else:
                yield from differences(want[key], got[key], f"{path}.{key}")
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got)):
            yield from differences(w, g, f"{path}[{i}]")
    elif want != got:
        yield f"{path}: {want!r} came back as {got!r}"


def main():
    kind = sys.argv[1]
    spec = json.load(sys.stdin)
    model = KINDS[kind].from_dict(spec)
    problems = [f"validation: {e}" for e in (model.validate() or [])]
    problems += list(differences(spec, model.serialize()))
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{kind}: valid")


if __name__ == "__main__":
    main()
