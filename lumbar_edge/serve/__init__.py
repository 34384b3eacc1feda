"""``lumbar-edge serve``: a DICOM listener that receives MR studies and answers with DICOM results.

A scanner or PACS pushes a study by C-STORE; the listener spools it, waits until the study is
complete (every sending association released, then a quiet time), runs it through the same
:class:`~lumbar_edge.pipeline.Pipeline` as ``infer``, writes the JSON/CSV/PNG outputs of ``infer``
plus a DICOM Structured Report and Secondary Capture overlays in new series of the source study,
and with ``--forward`` sends those to the PACS by C-STORE, retrying until delivered.

One step per module:

==================  ===========================================================================
``config``          the settings and their checks
``scp``             the pynetdicom Storage SCP (MR Image Storage, Verification): who and what is
                    accepted, C-STORE statuses, PDU and association limits
``spool``           received instances on disk (atomic writes, disk accounting)
``tracker``         when a study is complete; aborted associations; exactly-once bookkeeping
``state``           the per-study state files and the journal (crash-safe resume)
``worker``          the Pipeline run and the output writers
``sr`` / ``sc``     the Comprehensive SR of the 25 findings / the Secondary Capture overlays
``forward``         C-STORE of the results to the PACS with back-off
``server``          all of it assembled; ``run_server`` for the command line
==================  ===========================================================================

Importing this package does not import pynetdicom: the listener loads it when it starts, and
without it raises :class:`~lumbar_edge.errors.MissingDependencyError` naming the ``serve`` extra.
"""
from .config import ForwardTarget, ServeConfig, parse_forward
from .server import Server, run_server

__all__ = ["ServeConfig", "ForwardTarget", "parse_forward", "Server", "run_server"]
