"""EvolutionClient against FakeEvolution over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from hybridflow.errors import SendError
from hybridflow.evolution import EvolutionClient, evolution_error_detail, evolution_number, text_body
from tests.support.fakes import LICENSE_REQUIRED_BODY, FakeEvolution
from tests.support.ports import closed_port_url

API_KEY = "global-key-5f1c9a7e"
TEXT = "Olá! Seu pedido 123 saiu para entrega."
CHAT = "5511988887777@s.whatsapp.net"


@pytest.fixture
def evolution(fake_evolution: FakeEvolution) -> FakeEvolution:
    """The fake Evolution, checking the API key and the instances as the real one does."""
    fake_evolution.api_key = API_KEY
    fake_evolution.instances = {"main", "loja centro"}
    return fake_evolution


@pytest.fixture
async def client():
    client = EvolutionClient(timeout=5.0)
    yield client
    await client.aclose()


async def send(client: EvolutionClient, fake: FakeEvolution, **overrides):
    args = {"base_url": fake.url, "instance": "main", "api_key": API_KEY, "number": CHAT, "text": TEXT}
    return await client.send_text(**{**args, **overrides})


async def send_error(client: EvolutionClient, fake: FakeEvolution, **overrides) -> SendError:
    with pytest.raises(SendError) as caught:
        await send(client, fake, **overrides)
    return caught.value


# --- success -----------------------------------------------------------------------------------------------------


async def test_send_text_v2_body_header_and_message_id(client, evolution):
    result = await send(client, evolution, delay_ms=1200, quoted_id="3EB0AAAA", link_preview=False)

    request = evolution.requests[-1]
    assert (request.method, request.path) == ("POST", "/message/sendText/main")
    assert request.headers["apikey"] == API_KEY
    assert request.json == {
        "number": "5511988887777",
        "text": TEXT,
        "delay": 1200,
        "linkPreview": False,
        "quoted": {"key": {"id": "3EB0AAAA"}},
    }
    assert result.status_code == 201
    assert result.message_id == evolution.sent_messages[0]["key"]["id"]
    assert result.message_id.startswith("3EB0") and len(result.message_id) == 22
    assert result.body["key"] == {"remoteJid": CHAT, "fromMe": True, "id": result.message_id}
    assert result.body["status"] == "PENDING"
    assert evolution.sent_texts == [request.json]


async def test_send_text_minimal_body(client, evolution):
    await send(client, evolution)
    assert evolution.requests[-1].json == {"number": "5511988887777", "text": TEXT}


@pytest.mark.parametrize("jid", ["120363025246125486@g.us", "219876543210987@lid"])
async def test_group_and_lid_jids_pass_through(client, evolution, jid):
    result = await send(client, evolution, number=jid)
    assert evolution.requests[-1].json["number"] == jid
    assert result.body["key"]["remoteJid"] == jid


async def test_instance_name_is_quoted_and_trailing_slash_tolerated(client, evolution):
    result = await send(client, evolution, base_url=evolution.url + "/", instance="loja centro")
    assert result.message_id
    assert evolution.requests[-1].path == "/message/sendText/loja centro"


def test_evolution_number():
    assert evolution_number("5511988887777@s.whatsapp.net") == "5511988887777"
    assert evolution_number("5511988887777:12@s.whatsapp.net") == "5511988887777"
    assert evolution_number("5511988887777") == "5511988887777"
    assert evolution_number("120363025246125486@g.us") == "120363025246125486@g.us"
    assert evolution_number("219876543210987@lid") == "219876543210987@lid"


def test_v1_text_body_shape():
    body = text_body(api_version="v1", number="5511", text="oi", delay_ms=800, quoted_id="BAE5", link_preview=True)
    assert body == {
        "number": "5511",
        "textMessage": {"text": "oi"},
        "options": {"delay": 800, "presence": "composing", "linkPreview": True, "quoted": {"key": {"id": "BAE5"}}},
    }
    with pytest.raises(ValueError):
        text_body(api_version="v3", number="5511", text="oi")


async def test_v1_body_sent_to_a_v2_server_is_a_permanent_schema_error(client, evolution):
    error = await send_error(client, evolution, api_version="v1", delay_ms=500)

    assert evolution.requests[-1].json == {
        "number": "5511988887777",
        "textMessage": {"text": TEXT},
        "options": {"delay": 500, "presence": "composing"},
    }
    assert not error.transient
    assert error.http_status == 400
    assert 'instance requires property "text"' in error.message


# --- HTTP errors ------------------------------------------------------------------------------------------------


async def test_number_not_on_whatsapp_is_permanent_and_says_so(client, evolution):
    evolution.not_on_whatsapp.add("5511900001111")
    error = await send_error(client, evolution, number="5511900001111@s.whatsapp.net")
    assert not error.transient
    assert error.http_status == 400
    assert "number 5511900001111 is not on WhatsApp" in error.message
    assert evolution.sent_texts == []


async def test_empty_text_is_a_permanent_schema_error(client, evolution):
    error = await send_error(client, evolution, text="")
    assert (error.transient, error.http_status) == (False, 400)
    assert 'The "text" cannot be empty' in error.message


async def test_wrong_api_key_is_permanent(client, evolution):
    error = await send_error(client, evolution, api_key="wrong")
    assert (error.transient, error.http_status) == (False, 401)
    assert "API key was refused" in error.message


async def test_unknown_instance_is_permanent(client, evolution):
    error = await send_error(client, evolution, instance="ghost")
    assert (error.transient, error.http_status) == (False, 404)
    assert 'The "ghost" instance does not exist' in error.message


async def test_unknown_route_is_permanent(client, evolution):
    error = await send_error(client, evolution, base_url=evolution.url + "/v2")
    assert (error.transient, error.http_status) == (False, 404)
    assert "Cannot POST /v2/message/sendText/main" in error.message


async def test_server_error_is_transient_and_the_retry_succeeds(client, evolution):
    evolution.fail_next(500)
    error = await send_error(client, evolution)
    assert (error.transient, error.http_status) == (True, 500)
    assert "Internal Server Error" in error.message

    result = await send(client, evolution)
    assert result.message_id
    assert len(evolution.sent_texts) == 1


@pytest.mark.parametrize(
    ("status", "transient"),
    [(502, True), (503, True), (504, True), (408, True), (429, True), (403, False), (422, False), (405, False)],
)
async def test_status_classification(client, evolution, status, transient):
    evolution.fail_next(status)
    error = await send_error(client, evolution)
    assert (error.transient, error.http_status) == (transient, status)


async def test_license_required_is_permanent(client, evolution):
    evolution.fail_next(503, body=LICENSE_REQUIRED_BODY)
    error = await send_error(client, evolution)
    assert (error.transient, error.http_status) == (False, 503)
    assert "licence not activated" in error.message


async def test_non_json_error_body_uses_the_reason_phrase():
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    async with EvolutionClient(transport=transport) as client:
        with pytest.raises(SendError) as caught:
            await client.send_text(base_url="http://evo", instance="main", api_key="k", number="55", text="x")
    assert caught.value.transient
    assert "HTTP 502: Bad Gateway" in caught.value.message


# --- transport errors -------------------------------------------------------------------------------------------


async def test_timeout_is_transient(evolution):
    evolution.timeout_next(seconds=30)
    async with EvolutionClient(timeout=0.3) as client:
        error = await send_error(client, evolution)
    assert error.transient
    assert error.http_status is None
    assert "timeout" in error.message


async def test_timeout_allows_for_the_typing_delay(evolution):
    evolution.delay_scale = 1.0  # the fake blocks for the body's delay, as Evolution does
    async with EvolutionClient(timeout=0.3) as client:
        result = await send(client, evolution, delay_ms=500)
    assert result.message_id


async def test_connection_refused_is_transient(client):
    with pytest.raises(SendError) as caught:
        await client.send_text(base_url=closed_port_url(), instance="main", api_key=API_KEY, number=CHAT, text=TEXT)
    assert caught.value.transient
    assert caught.value.http_status is None
    assert "connection refused" in caught.value.message


async def test_other_transport_errors_are_transient():
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    async with EvolutionClient(transport=httpx.MockTransport(drop)) as client:
        with pytest.raises(SendError) as caught:
            await client.send_text(base_url="http://evo", instance="main", api_key="k", number="55", text="x")
    assert caught.value.transient
    assert "RemoteProtocolError" in caught.value.message


async def test_base_url_without_scheme_is_permanent(client):
    with pytest.raises(SendError) as caught:
        await client.send_text(base_url="evo.example.com", instance="main", api_key="k", number="55", text="x")
    assert not caught.value.transient


# --- presence, read receipts, connection state ------------------------------------------------------------------


async def test_send_presence(client, evolution):
    await client.send_presence(base_url=evolution.url, instance="main", api_key=API_KEY, number=CHAT, delay_ms=900)
    request = evolution.requests[-1]
    assert request.path == "/chat/sendPresence/main"
    assert request.json == {"number": "5511988887777", "delay": 900, "presence": "composing"}
    assert evolution.presences == [request.json]


async def test_send_presence_v1_body(client, evolution):
    with pytest.raises(SendError) as caught:  # the v2 fake rejects the v1 shape, as a v2 server does
        await client.send_presence(
            base_url=evolution.url, instance="main", api_key=API_KEY, number=CHAT, api_version="v1"
        )
    v1_body = {"number": "5511988887777", "options": {"delay": 1200, "presence": "composing"}}
    assert evolution.requests[-1].json == v1_body
    assert caught.value.http_status == 400


async def test_mark_read(client, evolution):
    await client.mark_read(
        base_url=evolution.url, instance="main", api_key=API_KEY, remote_jid=CHAT, message_id="ABCDEF0123"
    )
    request = evolution.requests[-1]
    assert (request.method, request.path) == ("POST", "/chat/markMessageAsRead/main")
    assert request.json == {"readMessages": [{"remoteJid": CHAT, "fromMe": False, "id": "ABCDEF0123"}]}
    assert evolution.read_receipts == [request.json]


async def test_check_instance(client, evolution):
    state = await client.check_instance(base_url=evolution.url, instance="main", api_key=API_KEY)
    assert state == "open"
    assert evolution.requests[-1].method == "GET"

    evolution.states["main"] = "close"
    assert await client.check_instance(base_url=evolution.url, instance="main", api_key=API_KEY) == "close"


async def test_check_instance_errors(client, evolution):
    with pytest.raises(SendError) as caught:
        await client.check_instance(base_url=evolution.url, instance="ghost", api_key=API_KEY)
    assert (caught.value.transient, caught.value.http_status) == (False, 404)
    with pytest.raises(SendError) as caught:
        await client.check_instance(base_url=evolution.url, instance="main", api_key="nope")
    assert (caught.value.transient, caught.value.http_status) == (False, 401)


# --- logging ------------------------------------------------------------------------------------------------------


async def test_one_log_event_per_attempt_without_key_or_text(client, evolution):
    with capture_logs() as logs:
        await send(client, evolution)
        with pytest.raises(SendError):
            await send(client, evolution, instance="ghost")
        with pytest.raises(SendError):
            await send(client, evolution, api_key=API_KEY + "-old")

    assert [entry["event"] for entry in logs] == ["evolution.request"] * 3
    ok, missing, unauthorized = logs
    assert ok["outcome"] == "ok"
    assert ok["status"] == 201
    assert ok["instance"] == "main"
    assert ok["path"] == "/message/sendText/main"
    assert ok["text_length"] == len(TEXT)
    assert isinstance(ok["duration_ms"], float)
    assert (missing["outcome"], missing["status"]) == ("permanent_error", 404)
    assert (unauthorized["outcome"], unauthorized["status"]) == ("permanent_error", 401)
    dumped = json.dumps(logs, default=str)
    assert API_KEY not in dumped
    assert TEXT not in dumped


async def test_transport_failures_are_logged(client):
    with capture_logs() as logs:
        with pytest.raises(SendError):
            await client.send_text(base_url=closed_port_url(), instance="main", api_key=API_KEY, number=CHAT, text=TEXT)
    assert len(logs) == 1
    assert logs[0]["outcome"] == "transient_error"
    assert logs[0]["status"] is None
    assert API_KEY not in json.dumps(logs, default=str)


# --- the fake's send.message echo -------------------------------------------------------------------------------


async def test_echo_webhook_arrives_before_the_send_returns(client, evolution):
    received: list[dict] = []
    headers_seen: list[str | None] = []
    sends_done_at_echo: list[int] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(await request.json())
        headers_seen.append(request.headers.get("Authorization"))
        sends_done_at_echo.append(len(evolution.sent_messages))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        evolution.echo_webhook_url = f"http://{host}:{port}/webhook"
        evolution.echo_headers = {"Authorization": "Bearer hook-token"}
        result = await send(client, evolution)
    finally:
        await runner.cleanup()

    assert len(received) == 1
    assert sends_done_at_echo == [0]  # the send call was still open when the echo came in
    echo = received[0]
    assert echo["event"] == "send.message"
    assert echo["instance"] == "main"
    assert echo["data"] == result.body
    assert echo["data"]["key"]["id"] == result.message_id
    assert echo["date_time"].endswith("Z")
    assert headers_seen == ["Bearer hook-token"]
    assert evolution.echo_statuses == [200]


# --- pure helpers -------------------------------------------------------------------------------------------------


def test_error_detail_flattens_evolution_messages():
    nested = {"status": 400, "error": "Bad Request", "response": {"message": [['instance requires property "text"']]}}
    assert evolution_error_detail(nested) == 'instance requires property "text"'
    assert evolution_error_detail({"response": {"message": "Unauthorized"}}) == "Unauthorized"
    assert evolution_error_detail(LICENSE_REQUIRED_BODY) == LICENSE_REQUIRED_BODY["message"]
    assert evolution_error_detail(None) == ""
    assert len(evolution_error_detail({"response": {"message": ["x" * 5000]}})) <= 500


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_error_detail_never_raises(body):
    assert isinstance(evolution_error_detail(body), str)
