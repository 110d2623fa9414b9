"""chatstore: PostgreSQL persistence for LLM chatbots."""

from chatstore.config import Settings
from chatstore.errors import (
    ChatStoreError,
    IdempotencyConflict,
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
