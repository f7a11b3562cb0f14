"""Every ORM model, imported in one place so the metadata (and Alembic) sees all tables."""

from comms.audit.models import AuditEvent, AuditHead
from comms.auth.models import ApiToken, LoginAttempt, LoginThrottle, RecoveryCode, WebSession
from comms.db import Base
from comms.destinations.models import Destination
from comms.detections.models import Cluster, Detection, DetectionEntity
from comms.drafts.models import Approval, ApprovalVoid, Draft, DraftDestination, DraftVersion
from comms.incidents.models import Incident, IncidentAssignment, IncidentLogEntry
from comms.jobs.models import Job
from comms.outbox.models import Delivery, Notification, PlatformPause
from comms.users.models import RoleGrant, RoleGrantApproval, User, UserRole

__all__ = [
    "ApiToken",
    "Approval",
    "ApprovalVoid",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Cluster",
    "Delivery",
    "Destination",
    "Detection",
    "DetectionEntity",
    "Draft",
    "DraftDestination",
    "DraftVersion",
    "Incident",
    "IncidentAssignment",
    "IncidentLogEntry",
    "Job",
    "LoginAttempt",
    "LoginThrottle",
    "Notification",
    "PlatformPause",
    "RecoveryCode",
    "RoleGrant",
    "RoleGrantApproval",
    "User",
    "UserRole",
    "WebSession",
]
