"""The HTTP peer of scripts/bench: chatstore's paths written the usual way, with
FastAPI + SQLModel + asyncpg (SQLAlchemy's asyncio engine), one uvicorn worker.

It does what the original spec asks of the three paths the benchmark drives,
the way that stack is normally written: SQLModel table models for better-auth's
"user" and "session" tables and for conversations and messages, a bearer
dependency that checks the session row (token, "expiresAt" in the future) on
every request, ownership on every query, seq assigned under the conversation's
row lock, response models for the bodies.

    POST /api/conversations/{id}/messages          201 Message
    GET  /api/conversations/{id}/messages?limit=&order=
                                                   200 {"data", "has_more", "first_seq", "last_seq"}
    GET  /api/conversations?limit=                 200 {"data", "next_cursor"}

Run: ``PEER_DATABASE_URL=postgresql+asyncpg://... uvicorn
scripts.benchpeers.fastapi_sqlmodel_app:app --workers 1``. ``create_schema``
makes its tables (scripts/benchlib/httppeers.py calls it, then seeds).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, DateTime, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tz() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


class User(SQLModel, table=True):
    __tablename__ = "user"
    id: str = Field(primary_key=True)
    name: str
    email: str = Field(unique=True)
    emailVerified: bool = False
    image: str | None = None
    createdAt: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))
    updatedAt: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))


class Session(SQLModel, table=True):
    __tablename__ = "session"
    id: str = Field(primary_key=True)
    expiresAt: dt.datetime = Field(sa_type=DateTime(timezone=True))
    token: str = Field(unique=True)
    createdAt: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))
    updatedAt: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))
    ipAddress: str | None = None
    userAgent: str | None = None
    userId: str = Field(foreign_key="user.id", ondelete="CASCADE", index=True)


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"
    __table_args__ = (
        Index(
            "conversations_user_updated_idx", "user_id", text("updated_at DESC"), text("id DESC")
        ),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(foreign_key="user.id", ondelete="CASCADE")
    title: str | None = Field(default=None, max_length=200)
    meta: dict[str, str] = Field(default_factory=dict, sa_column=Column("metadata", JSONB))
    message_count: int = 0
    last_seq: int = 0
    created_at: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))
    updated_at: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    conversation_id: uuid.UUID = Field(
        foreign_key="conversations.id", ondelete="CASCADE", primary_key=True
    )
    seq: int = Field(primary_key=True)
    user_id: str = Field(foreign_key="user.id", ondelete="CASCADE")
    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONB)
    tool_call_id: str | None = None
    meta: dict[str, str] = Field(default_factory=dict, sa_column=Column("metadata", JSONB))
    created_at: dt.datetime = Field(default_factory=_now, sa_type=DateTime(timezone=True))


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=64)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class MessageOut(BaseModel):
    conversation_id: uuid.UUID
    seq: int
    role: str
    content: str | None
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    metadata: dict[str, str]
    created_at: dt.datetime

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(
            conversation_id=m.conversation_id,
            seq=m.seq,
            role=m.role,
            content=m.content,
            name=m.name,
            tool_calls=m.tool_calls,
            tool_call_id=m.tool_call_id,
            metadata=m.meta,
            created_at=m.created_at,
        )


class MessagePage(BaseModel):
    data: list[MessageOut]
    has_more: bool
    first_seq: int | None
    last_seq: int | None


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str | None
    metadata: dict[str, str]
    message_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None


engine = create_async_engine(
    os.environ.get("PEER_DATABASE_URL", "postgresql+asyncpg://localhost/chatstore_peer"),
    pool_size=16,
    max_overflow=0,
)
sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
app = FastAPI(title="chatstore's HTTP peer: FastAPI + SQLModel")


async def db() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


DB = Annotated[AsyncSession, Depends(db)]


async def current_user(session: DB, authorization: Annotated[str | None, Header()] = None) -> str:
    """better-auth's bearer: the session row with that token, not expired."""
    if authorization is None or not authorization.startswith("Bearer "):
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    token = authorization.removeprefix("Bearer ").strip()
    found = (
        await session.exec(
            select(Session.userId).where(Session.token == token, Session.expiresAt > _now())
        )
    ).first()
    if found is None:
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return found


UserId = Annotated[str, Depends(current_user)]


@app.post("/api/conversations/{conversation_id}/messages", status_code=201)
async def append_message(
    conversation_id: uuid.UUID, body: MessageIn, session: DB, user_id: UserId
) -> MessageOut:
    conversation = (
        await session.exec(
            select(Conversation)
            .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
            .with_for_update()
        )
    ).first()
    if conversation is None:
        raise HTTPException(404, "not_found")
    now = _now()
    conversation.last_seq += 1
    conversation.message_count += 1
    conversation.updated_at = now
    message = Message(
        conversation_id=conversation.id,
        seq=conversation.last_seq,
        user_id=user_id,
        role=body.role,
        content=body.content,
        name=body.name,
        tool_calls=body.tool_calls,
        tool_call_id=body.tool_call_id,
        meta=body.metadata,
        created_at=now,
    )
    session.add(conversation)
    session.add(message)
    await session.commit()
    return MessageOut.of(message)


@app.get("/api/conversations/{conversation_id}/messages")
async def list_messages(
    conversation_id: uuid.UUID,
    session: DB,
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Literal["asc", "desc"] = "asc",
) -> MessagePage:
    owned = (
        await session.exec(
            select(Conversation.id).where(
                Conversation.id == conversation_id, Conversation.user_id == user_id
            )
        )
    ).first()
    if owned is None:
        raise HTTPException(404, "not_found")
    seq = col(Message.seq)
    rows = (
        await session.exec(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(seq.desc() if order == "desc" else seq)
            .limit(limit + 1)
        )
    ).all()
    page = [MessageOut.of(m) for m in rows[:limit]]
    return MessagePage(
        data=page,
        has_more=len(rows) > limit,
        first_seq=page[0].seq if page else None,
        last_seq=page[-1].seq if page else None,
    )


@app.get("/api/conversations")
async def list_conversations(
    session: DB, user_id: UserId, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> ConversationPage:
    rows = (
        await session.exec(
            select(Conversation)
            .where(Conversation.user_id == user_id)
            .order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
            .limit(limit + 1)
        )
    ).all()
    data = [
        ConversationOut(
            id=c.id,
            title=c.title,
            metadata=c.meta,
            message_count=c.message_count,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for c in rows[:limit]
    ]
    cursor = f"{data[-1].updated_at.isoformat()}|{data[-1].id}" if len(rows) > limit else None
    return ConversationPage(data=data, next_cursor=cursor)


def create_schema(url: str) -> None:
    """The tables, from the models (``url``: a psycopg URL, synchronous)."""
    from sqlalchemy import create_engine

    sync = create_engine(url)
    try:
        SQLModel.metadata.create_all(sync)
    finally:
        sync.dispose()
