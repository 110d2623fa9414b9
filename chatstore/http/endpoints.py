"""Every endpoint, declared once: routing, query parsing and the OpenAPI
document all come from the rows of ``ENDPOINTS`` (Starlette's ``Route``
carries method, path and handler; the row adds what the document says).

A row's ``query`` model (chatstore/http/params.py) is what its handler
parses with ``query(request, Model)`` and what the document lists as its
query parameters; its ``body`` models are what the handler validates and
what the document shows as the request body. The error responses a row
implies follow from its shape (chatstore/http/openapi.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatstore.http import v1
from chatstore.http.params import (
    MAX_SEQ,
    ChatHistoryQuery,
    ConversationListQuery,
    ExportQuery,
    MessageListQuery,
    QueryModel,
    SearchQuery,
    TruncateQuery,
    V1ItemListQuery,
)
from chatstore.http.routes import (
    chat,
    conversations,
    erasure,
    export,
    imports,
    messages,
    search,
    service,
)
from chatstore.http.v1_shapes import (
    MAX_ITEMS_PER_CALL,
    V1Conversation,
    V1ConversationCreate,
    V1ConversationDeleted,
    V1ConversationUpdate,
    V1Item,
    V1ItemList,
    V1ItemsCreate,
)
from chatstore.imports import MAX_IMPORT_MESSAGES, ImportInput
from chatstore.models import (
    ActiveLeaf,
    ActiveLeafInput,
    AnyObject,
    ChatExchange,
    ChatHistory,
    ChatMessageInput,
    ChatStart,
    Conversation,
    ConversationInput,
    ConversationPage,
    ConversationPatch,
    Deleted,
    Erased,
    Health,
    Message,
    MessageAppend,
    MessageBatch,
    MessageList,
    MessagePage,
    OpenAIExport,
    Readiness,
    SearchResults,
    SiblingList,
)

Handler = Callable[[Request], Awaitable[Response]]
Models = tuple[type[BaseModel], ...]  # more than one: any one of them (oneOf)

# The query model of the endpoint serving a request (params.query checks it).
QUERY_SCOPE_KEY = "chatstore.query"


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    id: str  # the OpenAPI operationId
    summary: str
    tag: str
    status: int  # success
    response: Models  # () for no content
    body: Models = ()
    body_required: bool = True
    # (media type, description): request bodies in a media type besides JSON
    body_streams: tuple[tuple[str, str], ...] = ()
    query: type[QueryModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()  # header parameters besides Idempotency-Key
    streams: tuple[tuple[str, str], ...] = ()  # (media type, description): non-JSON successes
    idempotent: bool = False  # takes an Idempotency-Key
    extra: tuple[str, ...] = ()  # more responses, by name in openapi.RESPONSES
    public: bool = False

    @property
    def openai(self) -> bool:
        """One of OpenAI's Conversations API routes (chatstore/http/v1.py):
        OpenAI's error bodies, a 400 for a broken rule."""
        return self.path.startswith("/v1/")

    def route(self) -> Route:
        handler, model = self.handler, self.query

        async def endpoint(request: Request) -> Response:
            request.scope[QUERY_SCOPE_KEY] = model
            return await handler(request)

        endpoint.__name__ = handler.__name__
        return Route(self.path, endpoint, methods=[self.method.upper()])


def header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema,
    }


CONVERSATIONS = "/api/conversations"
CONVERSATION = "/api/conversations/{id}"
MESSAGES = "/api/conversations/{id}/messages"
MESSAGE = "/api/conversations/{id}/messages/{seq}"
V1_CONVERSATIONS = "/v1/conversations"
V1_CONVERSATION = "/v1/conversations/{conversation_id}"
V1_ITEMS = "/v1/conversations/{conversation_id}/items"
V1_ITEM = "/v1/conversations/{conversation_id}/items/{item_id}"

# fmt: off
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("get", "/healthz", service.healthz, "getHealth", "Liveness", "service", 200,
             (Health,), public=True),
    Endpoint("get", "/readyz", service.readyz, "getReadiness",
             "Readiness: the database answers and every migration is applied", "service",
             200, (Readiness,), extra=("NotReady",), public=True),
    Endpoint("get", "/openapi.json", service.openapi, "getOpenapi", "This document", "service",
             200, (AnyObject,), public=True),
    Endpoint("get", "/metrics", service.metrics_text, "getMetrics",
             "This process's metrics (unauthenticated: expose it to the scraper only)",
             "service", 200, (), public=True,
             streams=(("text/plain", "Prometheus text exposition format 0.0.4."),)),
    Endpoint("post", CONVERSATIONS, conversations.create_conversation, "createConversation",
             "Create a conversation", "conversations", 201, (Conversation,),
             (ConversationInput,), body_required=False, idempotent=True),
    Endpoint("get", CONVERSATIONS, conversations.list_conversations, "listConversations",
             "List conversations, newest activity first", "conversations", 200,
             (ConversationPage,), query=ConversationListQuery),
    Endpoint("post", f"{CONVERSATIONS}/import", imports.import_conversation,
             "importConversation",
             "Create a conversation from an export, atomically (seqs from 1)", "conversations",
             201, (Conversation,), (ImportInput,), idempotent=True,
             body_streams=(("application/x-ndjson", "chatstore's JSONL export: one Message "
                            "(see the Message schema) per line; conversation_id, seq and "
                            f"created_at are ignored. At most {MAX_IMPORT_MESSAGES} messages; "
                            "the body cap applies."),)),
    Endpoint("get", CONVERSATION, conversations.get_conversation, "getConversation",
             "Get a conversation", "conversations", 200, (Conversation,)),
    Endpoint("patch", CONVERSATION, conversations.update_conversation, "updateConversation",
             "Change a conversation's title, metadata or archived flag", "conversations", 200,
             (Conversation,), (ConversationPatch,)),
    Endpoint("delete", CONVERSATION, conversations.delete_conversation, "deleteConversation",
             "Delete a conversation and its messages", "conversations", 204, ()),
    Endpoint("post", MESSAGES, messages.append_messages, "appendMessages",
             "Append a message, or a list atomically", "messages", 201,
             (Message, MessageList), (MessageAppend, MessageBatch), idempotent=True,
             extra=("Conflict",)),
    Endpoint("get", MESSAGES, messages.list_messages, "listMessages",
             "List a conversation's messages", "messages", 200, (MessagePage,),
             query=MessageListQuery),
    Endpoint("delete", MESSAGES, messages.truncate_messages, "truncateMessages",
             "Delete the active path from a seq on, with its branches", "messages", 200,
             (Deleted,), query=TruncateQuery),
    Endpoint("get", MESSAGE + "/siblings", messages.list_siblings, "listSiblings",
             "A message and its alternatives (same parent), each with whether it is on the "
             "active path", "messages", 200, (SiblingList,)),
    Endpoint("put", CONVERSATION + "/active", messages.switch_branch, "switchBranch",
             "Show a message's branch: its newest descendant becomes the active leaf",
             "messages", 200, (ActiveLeaf,), (ActiveLeafInput,)),
    Endpoint("get", MESSAGE, messages.get_message, "getMessage", "Get a message", "messages",
             200, (Message,)),
    Endpoint("delete", MESSAGE, messages.delete_message, "deleteMessage",
             "Delete a message (its seq is not reused)", "messages", 204, ()),
    Endpoint("post", "/api/chat/start", chat.start, "startChat", "Start a chat session", "chat",
             201, (ChatStart,), (ConversationInput,), body_required=False, idempotent=True),
    Endpoint("post", "/api/chat/{session_id}/message", chat.message, "sendChatMessage",
             "Send the user's message and get the reply", "chat", 201, (ChatExchange,),
             (ChatMessageInput,), idempotent=True,
             extra=("ChatConflict", "ResponderError", "ResponderTimeout"),
             streams=(("text/event-stream", "With `Accept: text/event-stream`: the stored "
                       "user message (`event: message`, `id: <seq>`), the reply as it comes "
                       "(`event: delta`, `{\"content\": ...}`), the stored reply (`event: "
                       "message`) and `event: done`; or, when the reply fails after the user "
                       "message was stored, `event: error` with the error body "
                       "(`responder_error`, `responder_timeout`, `unavailable`) as the last "
                       "event. The user message is committed before the model is asked; a "
                       "partial reply is stored with metadata `incomplete` (`responder_error`, "
                       "`timeout`, `disconnected`)."),)),
    Endpoint("get", "/api/chat/{session_id}/history", chat.history, "getChatHistory",
             "The latest messages of a chat session, oldest first", "chat", 200,
             (ChatHistory,), query=ChatHistoryQuery),
    Endpoint("get", "/api/search", search.search, "searchMessages",
             "Full-text search over the caller's messages, best matches first", "search", 200,
             (SearchResults,), query=SearchQuery),
    Endpoint("delete", "/api/me/data", erasure.erase_my_data, "eraseMyData",
             "Delete everything the caller stored (not the account or its sessions)", "me",
             200, (Erased,)),
    Endpoint("get", "/api/conversations/{id}/export", export.export_conversation,
             "exportConversation", "Export a conversation", "export", 200, (OpenAIExport,),
             query=ExportQuery, extra=("TooManyStreams",),
             streams=(("application/x-ndjson", "format=jsonl: one Message (see the Message "
                       "schema) per line, in seq order."),)),
    Endpoint("get", "/api/conversations/{id}/events", export.conversation_events,
             "followConversation", "Live updates: every message appended, as Server-Sent Events",
             "export", 200, (), headers=(header(
                 "Last-Event-ID", "Replay the messages after this seq first.",
                 {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}),),
             extra=("TooManyStreams",),
             streams=(("text/event-stream", "One `event: message` per message appended, "
                       "with `id: <seq>` and the Message (see the Message schema) as `data`; "
                       "comment lines keep an idle stream open. The stream ends when the "
                       "session that opened it is signed out, revoked or expires (the "
                       "client's reconnection then gets its 401)."),)),
    # OpenAI's Conversations API (chatstore/http/v1.py), for the official clients.
    Endpoint("post", V1_CONVERSATIONS, v1.create_conversation, "v1CreateConversation",
             f"OpenAI: create a conversation, with up to {MAX_ITEMS_PER_CALL} items",
             "openai", 200, (V1Conversation,), (V1ConversationCreate,), body_required=False,
             idempotent=True),
    Endpoint("get", V1_CONVERSATION, v1.get_conversation, "v1GetConversation",
             "OpenAI: retrieve a conversation", "openai", 200, (V1Conversation,)),
    Endpoint("post", V1_CONVERSATION, v1.update_conversation, "v1UpdateConversation",
             "OpenAI: replace a conversation's metadata", "openai", 200, (V1Conversation,),
             (V1ConversationUpdate,), idempotent=True),
    Endpoint("delete", V1_CONVERSATION, v1.delete_conversation, "v1DeleteConversation",
             "OpenAI: delete a conversation and its items", "openai", 200,
             (V1ConversationDeleted,)),
    Endpoint("post", V1_ITEMS, v1.create_items, "v1CreateItems",
             f"OpenAI: add up to {MAX_ITEMS_PER_CALL} items, atomically; the query's include "
             "is accepted and ignored", "openai", 200, (V1ItemList,), (V1ItemsCreate,),
             idempotent=True),
    Endpoint("get", V1_ITEMS, v1.list_items, "v1ListItems",
             "OpenAI: list a conversation's items (newest first unless order=asc); include "
             "is accepted and ignored", "openai", 200, (V1ItemList,), query=V1ItemListQuery),
    Endpoint("get", V1_ITEM, v1.get_item, "v1GetItem", "OpenAI: retrieve an item", "openai",
             200, (V1Item,)),
    Endpoint("delete", V1_ITEM, v1.delete_item, "v1DeleteItem",
             "OpenAI: delete an item; answers with the conversation (400 for an item "
             "that is one of several a chat message stands for)", "openai", 200,
             (V1Conversation,), extra=("V1BadRequest",)),
)
# fmt: on


def routes() -> list[Route]:
    return [endpoint.route() for endpoint in ENDPOINTS]
