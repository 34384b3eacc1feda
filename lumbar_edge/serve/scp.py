"""The DICOM side of the listener: a pynetdicom Storage SCP for MR images, plus Verification.

What a peer sees:

* **Verification** (C-ECHO), **MR Image Storage**, **Enhanced MR Image Storage** and **Legacy
  Converted Enhanced MR Image Storage** are the only presentation contexts accepted; any other
  SOP class (CT, a Secondary Capture, an SR ...) is rejected at association negotiation
  ("abstract syntax not supported", PS3.8), so a non-MR object is never received. Transfer
  syntaxes: the uncompressed ones (deflated included), plus each compressed one this
  installation can decode (``pip install 'lumbar-edge[codecs]'``): RLE, JPEG baseline /
  extended / lossless (SV1 and any predictor), JPEG-LS lossless and near-lossless, JPEG 2000
  lossless and lossy. What is received is stored as received (no transcoding). Each refused
  presentation context is logged with the reason (its SOP class, or its transfer syntaxes, is
  not supported here, naming what is).
* **Called AE title**: an association addressed to another AE title than ``--ae-title`` is
  rejected ("called AE title not recognised").
* **Calling AE titles**: with ``--allow``, an association from any other calling AE title is
  rejected (permanent, "calling AE title not recognised").
* **Association count**: beyond ``--max-associations`` at once, an association is rejected
  (transient, "local limit exceeded"); the peer may try again later.
* **PDU size**: the listener announces ``--max-pdu`` as its maximum PDU length; a peer that sends
  a larger P-DATA PDU anyway has its instance refused and the association aborted.
* **C-STORE statuses**: 0000 stored; A900 the data set is not an MR image (SOP Class UID or
  Modality do not match the MR storage context it came on); C000 the data set cannot be
  read or lacks valid Study/SOP Instance UIDs; A700 out of resources (the spool limit or the disk
  is full: try later).

Every refusal is logged once per association, with the calling AE title and the reason; logs
name studies by StudyInstanceUID only, never by patient name or ID.
"""
from __future__ import annotations

import logging
import uuid
from typing import Dict, List, Optional

from ..errors import InputError, MissingDependencyError
from .config import ServeConfig
from .dicom_common import valid_uid
from .tracker import STATUS_OUT_OF_RESOURCES, StudyTracker

log = logging.getLogger("lumbar_edge.serve")

STATUS_NOT_MR = 0xA900  # Error: Data Set does not match SOP Class
STATUS_CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
A_RELEASE_RQ_TYPE = 0x05
P_DATA_TF_TYPE = 0x04
PDU_HEADER = 6  # type, reserved, 4-byte length


def require_pynetdicom():
    """The pynetdicom module; raises :class:`MissingDependencyError` naming the ``serve`` extra."""
    try:
        import pynetdicom
    except ImportError as exc:
        raise MissingDependencyError("lumbar-edge serve (the DICOM listener)", ["pynetdicom"], "serve") from exc
    return pynetdicom


def mr_storage_classes() -> List[str]:
    """The MR SOP classes received: MR Image Storage, Enhanced MR Image Storage and Legacy
    Converted Enhanced MR Image Storage."""
    from pydicom.uid import EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage, MRImageStorage

    return [MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage]


def storage_transfer_syntaxes() -> List[str]:
    """Transfer syntaxes accepted for MR images: the uncompressed ones, then each compressed one
    whose pixel decoder is available here."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    accepted = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
                uid.ExplicitVRBigEndian]
    for ts in (uid.RLELossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
               uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000):
        try:
            if get_decoder(ts).is_available:
                accepted.append(ts)
        except NotImplementedError:
            continue
    return accepted


def _uid_name(value) -> str:
    from pydicom.uid import UID

    uid = UID(str(value))
    return f"{uid.name} ({uid})" if uid.name and uid.name != str(uid) else str(uid)


def refused_context_reasons(contexts, accepted_syntaxes: List[str]) -> List[str]:
    """One line per refused presentation context (pynetdicom ``PresentationContext`` objects
    with their negotiation result): which SOP class, and why it was refused."""
    out = []
    for cx in contexts:
        what = _uid_name(cx.abstract_syntax)
        if cx.result == 0x03:
            why = f"SOP class not supported here (accepted: {ACCEPTED_CLASSES})"
        elif cx.result == 0x04:
            proposed = ", ".join(_uid_name(ts) for ts in cx.transfer_syntax) or "none"
            why = (f"none of its transfer syntaxes ({proposed}) can be decoded here (accepted: "
                   f"{', '.join(_uid_name(ts) for ts in accepted_syntaxes)})")
        else:
            why = cx.status
        out.append(f"{what}: {why}")
    return out


ACCEPTED_CLASSES = "MR, Enhanced MR and Legacy Converted Enhanced MR Image Storage, and Verification"
#: At most this many refused SOP classes are named in the log line of one association (dcmtk's
#: storescu proposes every storage class it knows unless told -R: over a hundred).
_NAMED_CLASSES = 8


def log_refused_contexts(sid: str, calling: str, assoc, syntaxes: List[str]) -> None:
    """Log why presentation contexts of an accepted association were refused: a warning naming
    each MR context refused for its transfer syntaxes (or everything, when nothing was accepted
    and the association is aborted); the SOP classes not supported here on one info line."""
    rejected = list(assoc.rejected_contexts)
    if not rejected:
        return
    if not assoc.accepted_contexts:
        log.warning("association %s from %s: no presentation context accepted, so the association is aborted; "
                    "refused: %s", sid, calling, "; ".join(refused_context_reasons(rejected, syntaxes)))
        return
    by_syntax = [cx for cx in rejected if cx.result != 0x03]
    if by_syntax:
        log.warning("association %s from %s: refused presentation context(s): %s", sid, calling,
                    "; ".join(refused_context_reasons(by_syntax, syntaxes)))
    by_class = sorted({_uid_name(cx.abstract_syntax) for cx in rejected if cx.result == 0x03})
    if by_class:
        named = ", ".join(by_class[:_NAMED_CLASSES]) + (
            f" and {len(by_class) - _NAMED_CLASSES} more" if len(by_class) > _NAMED_CLASSES else "")
        log.info("association %s from %s: %d presentation context(s) refused, SOP class not supported here "
                 "(accepted: %s): %s", sid, calling, len(by_class), ACCEPTED_CLASSES, named)


class StorageSCP:
    """The pynetdicom AE and its event handlers, feeding :class:`StudyTracker`."""

    def __init__(self, config: ServeConfig, tracker: StudyTracker):
        pynetdicom = require_pynetdicom()
        from pynetdicom.sop_class import Verification

        self.config = config
        self.tracker = tracker
        self._evt = pynetdicom.evt
        self._sessions: Dict[int, str] = {}  # id(Association) -> session id
        self._pdu_violations: Dict[str, int] = {}
        self._mr = frozenset(mr_storage_classes())
        self._syntaxes = storage_transfer_syntaxes()
        ae = pynetdicom.AE(ae_title=config.ae_title)
        ae.add_supported_context(Verification)
        for sop_class in mr_storage_classes():
            ae.add_supported_context(sop_class, self._syntaxes)
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu
        ae.network_timeout = config.network_timeout
        ae.acse_timeout = ae.dimse_timeout = config.network_timeout
        ae.require_called_aet = True  # associations must be addressed to this AE title
        if config.allow:
            ae.require_calling_aet = list(config.allow)
        self.ae = ae
        self.server = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> int:
        """Listen (non-blocking); returns the bound port. Raises :class:`InputError` when the
        address cannot be bound (in use, no permission)."""
        evt = self._evt
        handlers = [(evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_DATA_RECV, self._on_data), (evt.EVT_PDU_RECV, self._on_pdu),
                    (evt.EVT_RELEASED, self._on_released), (evt.EVT_CONN_CLOSE, self._on_closed)]
        try:
            self.server = self.ae.start_server((self.config.host, self.config.port), block=False,
                                               evt_handlers=handlers)
        except OSError as exc:
            raise InputError(f"cannot listen on {self.config.host or '*'}:{self.config.port}: {exc}") from exc
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -- handlers ----------------------------------------------------------------------------------

    def _session_id(self, assoc) -> Optional[str]:
        return self._sessions.get(id(assoc))

    def _on_accepted(self, event) -> None:
        assoc = event.assoc
        sid = uuid.uuid4().hex[:12]
        self._sessions[id(assoc)] = sid
        calling = assoc.requestor.ae_title
        self.tracker.open_session(sid, calling)
        log.info("association %s from %s (%s:%s) accepted", sid, calling, assoc.requestor.address,
                 assoc.requestor.port)
        log_refused_contexts(sid, calling, assoc, self._syntaxes)

    def _on_rejected(self, event) -> None:
        assoc = event.assoc
        primitive = getattr(assoc.acceptor, "primitive", None)
        code = (getattr(primitive, "result_source", None), getattr(primitive, "diagnostic", None))
        reasons = {(1, 3): "calling AE title not allowed",
                   (1, 7): f"called AE title is not {self.config.ae_title}",
                   (3, 2): f"more than {self.config.max_associations} associations at once"}
        reason = reasons.get(code, f"source {code[0]}, reason {code[1]}")
        log.warning("association from %s (%s) rejected: %s", assoc.requestor.ae_title, assoc.requestor.address, reason)

    def _on_echo(self, event) -> int:
        return 0x0000

    def _on_data(self, event) -> None:
        """Enforce the announced maximum PDU length on what the peer sends."""
        data = event.data
        if len(data) < PDU_HEADER or data[0] != P_DATA_TF_TYPE:
            return
        limit = self.config.max_pdu
        length = int.from_bytes(data[2:6], "big")
        if length > limit:
            sid = self._session_id(event.assoc) or "?"
            if sid not in self._pdu_violations:
                log.warning("association %s from %s: a %d-byte PDU exceeds the announced maximum of %d bytes; "
                            "aborting", sid, event.assoc.requestor.ae_title, length, limit)
            self._pdu_violations[sid] = length
            event.assoc.abort(block=False)

    def _on_pdu(self, event) -> None:
        # A-RELEASE-RQ: the peer has sent all it meant to. Recorded here, before the release
        # response goes out, so a crash can never leave a sender believing in a release we lost.
        if getattr(event.pdu, "pdu_type", None) == A_RELEASE_RQ_TYPE:
            sid = self._session_id(event.assoc)
            if sid is not None:
                self.tracker.release(sid)

    def _on_released(self, event) -> None:
        sid = self._session_id(event.assoc)
        if sid is not None:
            self.tracker.release(sid)  # idempotent: normally done on the A-RELEASE-RQ already

    def _on_closed(self, event) -> None:
        sid = self._sessions.pop(id(event.assoc), None)
        if sid is None:
            return
        reason = "exceeded the PDU size" if self._pdu_violations.pop(sid, None) else "was aborted or dropped"
        self.tracker.close(sid, reason)

    def _on_store(self, event) -> int:
        sid = self._session_id(event.assoc)
        if sid is None:
            return STATUS_CANNOT_UNDERSTAND
        if sid in self._pdu_violations:
            return STATUS_OUT_OF_RESOURCES
        session = self.tracker.session(sid)
        try:
            ds = event.dataset
            sop_class = str(ds.get("SOPClassUID", ""))
            modality = str(ds.get("Modality", ""))
            study_uid = str(ds.get("StudyInstanceUID", ""))
            sop_uid = str(ds.get("SOPInstanceUID", ""))
        except Exception as exc:  # pydicom raises many types for a malformed data set
            self._refuse(session, f"an unreadable data set ({type(exc).__name__})")
            return STATUS_CANNOT_UNDERSTAND
        context_class = str(event.context.abstract_syntax)
        if context_class not in self._mr or sop_class != context_class or modality != "MR":
            self._refuse(session, f"a non-MR object (SOP class {sop_class or 'missing'}, modality "
                                  f"{modality or 'missing'}) on the {context_class} context: status A900")
            return STATUS_NOT_MR
        if not valid_uid(study_uid) or not valid_uid(sop_uid):
            self._refuse(session, "an instance without valid StudyInstanceUID/SOPInstanceUID: status C000")
            return STATUS_CANNOT_UNDERSTAND
        return self.tracker.store(sid, study_uid, sop_uid, event.encoded_dataset(include_meta=True))

    @staticmethod
    def _refuse(session, why: str) -> None:
        if session is None:
            return
        session.refused += 1
        if session.refused == 1:
            log.warning("association %s from %s: refused %s", session.id, session.calling_aet, why)
