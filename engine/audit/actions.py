"""Every action the audit trail records, with what it means (the list in docs/security.md).

Names are ``part.verb``, at most 32 printable ASCII characters (they are the MSGID of the
syslog messages).
"""

from __future__ import annotations

MESSAGES_LIST = "messages.list"
MESSAGES_SEARCH = "messages.search"
MESSAGES_SHOW = "messages.show"
MESSAGES_RESEND = "messages.resend"
QUEUE_PAUSE = "queue.pause"
QUEUE_RESUME = "queue.resume"
QUEUE_RETRY = "queue.retry"
MPI_IMPORT = "mpi.import"
MPI_SHOW = "mpi.show"
MPI_SEARCH = "mpi.search"
STUDIES_IMPORT = "studies.import"
STUDIES_PULL = "studies.pull"
STUDIES_ORPHANS = "studies.orphans"
RECONCILE_RUN = "reconcile.run"
RECONCILE_EXPORT = "reconcile.export"
REVIEW_LIST = "review.list"
REVIEW_SHOW = "review.show"
REVIEW_NEXT = "review.next"
REVIEW_APPROVE = "review.approve"
REVIEW_REJECT = "review.reject"
REVIEW_DEFER = "review.defer"
REVIEW_AUDIT = "review.audit"
REVIEW_WAS_IS = "review.export-was-is"
CONFIG_RELOAD = "config.reload"
ARCHIVE_MODIFY = "archive.modify"
KEYS_ROTATE = "keys.rotate"
STORE_PRUNE = "store.prune"
STORE_BACKUP = "store.backup"
STORE_RESTORE = "store.restore"
AUDIT_LIST = "audit.list"
AUDIT_VERIFY = "audit.verify"
CONSOLE_LOGIN = "console.login"
CONSOLE_LOGOUT = "console.logout"
CONSOLE_ENROL = "console.enrol"
CONSOLE_REFUSED = "console.refused"
ROUTES_TEST = "routes.test"
USERS_ADD = "users.add"
USERS_CHANGE = "users.change"
USERS_DISABLE = "users.disable"
USERS_LIST = "users.list"

ACTIONS: dict[str, str] = {
    MESSAGES_LIST: "stored messages listed (their header fields); objects: the messages shown",
    MESSAGES_SEARCH: "messages searched for a text (the text is not recorded); objects: the"
    " messages shown",
    MESSAGES_SHOW: "one message shown, content and ACK (PHI)",
    MESSAGES_RESEND: "messages routed again and queued",
    QUEUE_PAUSE: "a destination's queue paused",
    QUEUE_RESUME: "a destination's queue resumed",
    QUEUE_RETRY: "a destination's set-aside messages put back in its queue",
    MPI_IMPORT: "an MPI export loaded (detail: the counts)",
    MPI_SHOW: "a patient shown (the identifier asked for is not recorded; objects: the"
    " patients shown)",
    MPI_SEARCH: "patients searched by name and birth date (not recorded); objects: the"
    " patients shown",
    STUDIES_IMPORT: "a list of the PACS' studies loaded (detail: the counts)",
    STUDIES_PULL: "an archive's list of studies pulled (C-FIND, QIDO-RS)",
    STUDIES_ORPHANS: "orphaned and wrong-patient studies listed (PHI)",
    RECONCILE_RUN: "a reconciler run: proposals written (and approved, with an automatic band)",
    RECONCILE_EXPORT: "proposals exported (PHI); objects: the proposals",
    REVIEW_LIST: "proposals listed (PHI), also the selection of a batch approval",
    REVIEW_SHOW: "one proposal shown side by side with its candidate (PHI)",
    REVIEW_NEXT: "one proposal shown by `review next` (PHI)",
    REVIEW_APPROVE: "a proposal approved (its merge queued for the PACS), or the approval refused",
    REVIEW_REJECT: "a proposal rejected, or the rejection refused",
    REVIEW_DEFER: "a proposal deferred, or refused",
    REVIEW_AUDIT: "the review decisions shown or exported, with their snapshots (PHI)",
    REVIEW_WAS_IS: "the was-is list written to a file (PHI)",
    CONFIG_RELOAD: "the engine reloaded its configuration (or refused a broken one); actor:"
    " the engine",
    ARCHIVE_MODIFY: "an approved merge applied to an archive directly (a merge target), or set"
    " aside as impossible there; actor: the engine; objects: the target, job and proposal",
    KEYS_ROTATE: "a new key to encrypt stored content, and the content re-encrypted with it",
    STORE_PRUNE: "messages pruned by the retention: section (detail: the counts)",
    STORE_BACKUP: "a backup of the store written (objects: the file)",
    STORE_RESTORE: "a backup restored onto a new store (recorded in the new store)",
    AUDIT_LIST: "the audit trail read",
    AUDIT_VERIFY: "the audit trail's chain verified (detail: intact, or the rows named)",
    CONSOLE_LOGIN: "a console login: password, then second factor (refused: wrong, locked,"
    " throttled; detail: why)",
    CONSOLE_LOGOUT: "a console session ended by its user",
    CONSOLE_ENROL: "a console user enrolled a TOTP second factor",
    CONSOLE_REFUSED: "a console page or action refused to a user's role",
    ROUTES_TEST: "a route run on a pasted message in the console (the message is not kept)",
    USERS_ADD: "a console user added; objects: the user",
    USERS_CHANGE: "a console user's password, role or second factor changed",
    USERS_DISABLE: "a console user disabled",
    USERS_LIST: "the console users listed",
}
"""Action name → what it records."""
