"""chatstore: PostgreSQL persistence for LLM chatbots."""

from chatstore.config import Settings
from chatstore.errors import (
    ChatStoreError,
    IdempotencyConflict,
    IdempotencyInProgress,
    NotFound,
    SeqConflict,
    Unavailable,
    ValidationError,
)
from chatstore.models import (
    Conversation,
    ConversationPage,
    Message,
    MessageInput,
    MessagePage,
    ToolCall,
)
from chatstore.store import UNSET, ChatStore

__all__ = [
    "UNSET",
    "ChatStore",
    "ChatStoreError",
    "Conversation",
    "ConversationPage",
    "IdempotencyConflict",
    "IdempotencyInProgress",
    "Message",
    "MessageInput",
    "MessagePage",
    "NotFound",
    "SeqConflict",
    "Settings",
    "ToolCall",
    "Unavailable",
    "ValidationError",
]
