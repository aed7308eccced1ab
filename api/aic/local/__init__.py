"""The whole product on one machine: ``aic up``, the local Triton from the nvidia-pytriton wheel, and the
default model's build.

Owns: ``up`` (embedded Valkey, local Triton, the default model, routes, the API and a dispatcher as children),
``triton`` (running the wheel's ``tritonserver``), ``modelbuild`` (EfficientNet-Lite0 into a repository) and
``ports``.

May import: anything of ``aic`` below it (it composes them); nothing imports it but ``aic.cli``, tests and
benches.
"""
