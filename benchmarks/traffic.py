"""The benchmark's webhook traffic: realistic ``messages.upsert`` bodies, built in Python or in wrk's Lua.

One template, taken from ``tests.helpers.upsert`` and dressed like a real Evolution 2.x capture
(``messageContextInfo``, ``contextInfo``, the instance's ``apikey``), is cut into literal pieces and named slots.
The Python generator and the generated wrk script fill the same slots the same way, so both load generators
send the same mix: many tenants and chats, customer and owner messages, and resent (duplicate) message ids.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.builders import upsert  # noqa: E402

WEBHOOK_PATH = "/webhooks/evolution"
PROBE_TOKEN = re.compile(r"PROBE-[0-9A-F]{6}-[0-9]{6}")
RECENT = 256  # a duplicate resends one of the last RECENT bodies, as Evolution does when it retries

CUSTOMER_TEXTS = (
    "Oi",
    "Bom dia! Vocês abrem domingo?",
    "Qual o valor do pão de queijo?",
    "Vocês entregam no Jardim Paulista? Preciso de 2 dúzias de coxinhas para sábado às 15h.",
    "Boa tarde, fiz um pedido ontem pelo app e ainda não chegou. O número é 48213, podem verificar?",
    "Tem bolo de cenoura com cobertura de chocolate hoje? Se tiver, separa um grande pra mim que passo aí "
    "depois do trabalho, lá pelas 18h30. Obrigada!",
    "Aceitam pix?",
    "Quero encomendar um bolo de aniversário para 30 pessoas, tema Frozen, para o dia 14. Quais sabores "
    "vocês têm e quanto fica? Pode ser com foto comestível?",
    "👍",
    "Vocês têm opção sem glúten?",
)
OWNER_TEXTS = (
    "Oi, aqui é o João! Já verifico para você.",
    "Abrimos sim, das 7h às 13h.",
    "Seu pedido saiu para entrega agora, chega em 20 minutos.",
    "Ok",
)
CUSTOMER_NAMES = ("Maria", "José Carlos", "Ana Paula", "MATEUS COSTA", "Fernanda 🌻", "Lucas", "Bia")
OWNER_NAME = "Padaria Boa"

# Slots that are JSON strings (filled with escaped text) and slots that are raw JSON values.
_RAW_SLOTS = ("from_me", "timestamp")
_SLOT = re.compile(r"@@(\w+)@@")


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """What the load looks like; written to a file so that every load-generator process sends the same mix."""

    tenants: tuple[str, ...]
    api_key: str
    chats_per_tenant: int = 250
    owner_share: float = 0.15
    duplicate_share: float = 0.05

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> TrafficConfig:
        data = json.loads(path.read_text())
        return cls(**{**data, "tenants": tuple(data["tenants"])})


def customer_chat(tenant_index: int, chat_index: int) -> str:
    """The JID of a customer chat; tenants do not share customers."""
    return f"5511{900000000 + tenant_index * 10000 + chat_index}@s.whatsapp.net"


def template(api_key: str) -> tuple[list[str], list[str]]:
    """The body cut into literal pieces and slot names: pieces[0] slot[0] pieces[1] ... pieces[-1]."""
    body = upsert("@@text@@", instance="@@instance@@", chat="@@chat@@", message_id="@@id@@",
                  push_name="@@push_name@@", timestamp="@@timestamp@@",  # type: ignore[arg-type]
                  contextInfo={"entryPointConversionSource": "contact_search",
                               "entryPointConversionApp": "whatsapp", "entryPointConversionDelaySeconds": 18})
    data = body["data"]
    data["key"]["fromMe"] = "@@from_me@@"
    data["status"] = "@@status@@"
    data["message"] = {
        "messageContextInfo": {
            "deviceListMetadata": {"recipientKeyHash": "tWZfYBffDIr9LA==", "recipientTimestamp": "1751921724"},
            "deviceListMetadataVersion": 2,
            "messageSecret": "bJdNJAqU/ejT5i/S05QOnXihDlBvfItWFPFbSO+T6bU=",
        },
        "conversation": data["message"]["conversation"],
    }
    body["apikey"] = api_key
    text = json.dumps(body, ensure_ascii=False)
    for slot in _RAW_SLOTS:
        text = text.replace(f'"@@{slot}@@"', f"@@{slot}@@")
    parts = _SLOT.split(text)
    return parts[0::2], parts[1::2]


def json_text(value: str) -> str:
    """A string escaped for use between the quotes of a JSON string (UTF-8 kept, as Evolution sends it)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


class Generator:
    """Webhook bodies for one load-generator worker.

    ``prefix`` (8 hex digits: a run id and a worker number) keeps its message ids apart from every other worker's.
    """

    def __init__(self, config: TrafficConfig, prefix: str, seed: int | None = None) -> None:
        self.config = config
        self.prefix = prefix
        self.pieces, self.slots = template(config.api_key)
        self.random = random.Random(seed)
        self.counter = 0
        self.recent: list[bytes] = []

    def body(self, **slots: str) -> bytes:
        parts: list[str] = [self.pieces[0]]
        for name, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts.append(slots[name])
            parts.append(piece)
        return "".join(parts).encode()

    def message(self, tenant: int, chat: str, text: str, *, owner: bool = False, name: str = "Maria") -> bytes:
        """A new message (a fresh id) from a customer called ``name``, or from the owner typing on the phone."""
        self.counter += 1
        return self.body(
            instance=json_text(self.config.tenants[tenant]), chat=chat, id=f"3EB0{self.prefix}{self.counter:08X}",
            from_me="true" if owner else "false", status="SERVER_ACK" if owner else "DELIVERY_ACK",
            push_name=json_text(OWNER_NAME if owner else name), text=json_text(text),
            timestamp=str(int(time.time())),
        )

    def next(self) -> bytes:
        """The next body of the mix: a duplicate of a recent body, or a new customer or owner message."""
        rnd, config = self.random, self.config
        if self.recent and rnd.random() < config.duplicate_share:
            return rnd.choice(self.recent)
        tenant, chat = rnd.randrange(len(config.tenants)), rnd.randrange(config.chats_per_tenant)
        owner = rnd.random() < config.owner_share
        body = self.message(tenant, customer_chat(tenant, chat), rnd.choice(OWNER_TEXTS if owner else CUSTOMER_TEXTS),
                            owner=owner, name=CUSTOMER_NAMES[chat % len(CUSTOMER_NAMES)])
        if len(self.recent) < RECENT:
            self.recent.append(body)
        else:
            self.recent[self.counter % RECENT] = body
        return body


def probe_token(run: str, index: int) -> str:
    return f"PROBE-{run}-{index:06d}"


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua_list(values: Any) -> str:
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


def wrk_script(config: TrafficConfig) -> str:
    """A wrk Lua script sending the same mix as ``Generator``; run it with ``-- <run id>`` (6 hex digits).

    ``done`` prints one line ``BENCH {json}`` with the counts and the latency percentiles.
    """
    pieces, slots = template(config.api_key)
    return f"""-- Generated by benchmarks/traffic.py: the webhook mix of the HybridFlow benchmark.
local pieces = {_lua_list(pieces)}
local slots = {_lua_list(slots)}
local tenants = {_lua_list(json_text(t) for t in config.tenants)}
local customer_texts = {_lua_list(json_text(t) for t in CUSTOMER_TEXTS)}
local owner_texts = {_lua_list(json_text(t) for t in OWNER_TEXTS)}
local names = {_lua_list(json_text(n) for n in CUSTOMER_NAMES)}
local owner_name = {lua_string(json_text(OWNER_NAME))}
local chats, owner_share = {config.chats_per_tenant}, {config.owner_share}
local duplicate_share, recent_size = {config.duplicate_share}, {RECENT}
local headers = {{["Content-Type"] = "application/json", ["User-Agent"] = "axios/1.7.9"}}

local threads, next_id = {{}}, 0
function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

local run, counter, recent, filled = "000000", 0, {{}}, 0
function init(args)
  run = args[1] or run
  math.randomseed(tonumber(run, 16) * 1000 + thread_id)
end

local function fill(values)
  local out = {{pieces[1]}}
  for i = 1, #slots do
    out[#out + 1] = values[slots[i]]
    out[#out + 1] = pieces[i + 1]
  end
  return table.concat(out)
end

function request()
  local body
  if filled > 0 and math.random() < duplicate_share then
    body = recent[math.random(filled)]
  else
    counter = counter + 1
    local t = math.random(#tenants)
    local c = math.random(chats) - 1
    local owner = math.random() < owner_share
    local chat = "5511" .. string.format("%d", 900000000 + (t - 1) * 10000 + c) .. "@s.whatsapp.net"
    body = fill({{
      instance = tenants[t], chat = chat,
      id = string.format("3EB0%s%02X%08X", run, thread_id, counter),
      from_me = owner and "true" or "false", status = owner and "SERVER_ACK" or "DELIVERY_ACK",
      push_name = owner and owner_name or names[c % #names + 1],
      text = owner and owner_texts[math.random(#owner_texts)] or customer_texts[math.random(#customer_texts)],
      timestamp = tostring(os.time()),
    }})
    recent[(counter - 1) % recent_size + 1] = body
    filled = math.min(filled + 1, recent_size)
  end
  return wrk.format("POST", "{WEBHOOK_PATH}", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "socket_errors": %d, "status_errors": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""
