"""`temdefect models`: list the models that load by name."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("models", help="list the bundled models that load by name")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..models import default_model_name, list_models

    infos = list_models()
    if not infos:
        print("No bundled models are installed; load a checkpoint by path instead.")
        return 0
    default = default_model_name()
    print(f"{'name':<16} {'arch/encoder':<26} {'classes':<18} {'MB':>5} {'thr.':>5}  "
          "description")
    for info in infos:
        mark = " (default)" if info.name == default else ""
        print(f"{info.name:<16} {info.arch + '/' + info.encoder:<26} "
              f"{','.join(info.classes):<18} {info.size_mb:5.1f} {info.threshold:5.2f}  "
              f"{info.description}{mark}")
    return 0
