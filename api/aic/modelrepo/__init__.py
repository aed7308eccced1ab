"""The Triton model repository on disk, shared by the operator, ``aic model build`` and ``aic up``.

Owns: the layout of a model directory (``layout``: file names, reading ``model.json`` and ``labels.txt``,
finding the models of a repository), rendering ``config.pbtxt`` from a ``ModelSpec`` (``render``) and writing a
model directory atomically, or removing one (``writer``).

May import: ``aic.core`` only (and tritonclient's ModelConfig protobuf for rendering). The python-backend runner
it copies into models is a file of ``aic.triton``, read as data, never imported.
"""
