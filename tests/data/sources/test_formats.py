from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.settings import Source
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Text, ToolCall
from lmforge.data.sources.read import read_source
from lmforge.errors import LmforgeError

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def one(tmp_path: Path, row: dict, kind: str = "conversation", **source):
    """The single record read from a one-line JSONL file."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    [record] = read_source(Source(path=str(path), **source), kind).records
    assert record.source == f"{path}:1"
    record.source = ""
    return record


def problem(tmp_path: Path, row: dict, kind: str = "conversation", **source) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(LmforgeError) as err:
        read_source(Source(path=str(path), **source), kind)
    message = str(err.value)
    assert message.startswith(f"{path}:1: ") or message.startswith(f"{path}: ")
    return message


# -- alpaca ----------------------------------------------------------------------------------------------------


def test_alpaca_with_input_system_and_history(tmp_path):
    row = {
        "instruction": "Translate",
        "input": "chat",
        "output": "cat",
        "system": "You translate.",
        "history": [["Hello", "Bonjour"]],
    }
    assert one(tmp_path, row) == Conversation(
        [
            Message("system", "You translate."),
            Message("user", "Hello"),
            Message("assistant", "Bonjour"),
            Message("user", "Translate\nchat"),
            Message("assistant", "cat"),
        ]
    )
    assert one(tmp_path, {"instruction": "Hi", "input": "", "output": "Hey"}, format="alpaca").messages == [
        Message("user", "Hi"),
        Message("assistant", "Hey"),
    ]


def test_alpaca_column_mapping(tmp_path):
    row = {"question": "2+2?", "answer": "4"}
    conv = one(tmp_path, row, format="alpaca", columns={"instruction": "question", "output": "answer"})
    assert conv.messages == [Message("user", "2+2?"), Message("assistant", "4")]
    assert one(tmp_path, row, columns={"instruction": "question", "output": "answer"}) == conv  # auto-detected
    message = problem(
        tmp_path, {"question": "2+2?"}, format="alpaca", columns={"instruction": "question", "output": "answer"}
    )
    assert (
        'no "answer" (mapped from output by data.train[].columns) key (keys: question); expected format alpaca'
        in message
    )


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"instruction": "a", "output": " "}, '"output" is empty; expected the assistant\'s reply text'),
        ({"instruction": "a", "output": 3}, '"output" is a number; expected a string'),
        (
            {"instruction": "", "input": "", "output": "b"},
            '"instruction" and "input" are empty; expected the task text',
        ),
        (
            {"instruction": "a", "output": "b", "history": [["x"]]},
            '"history"[0] is a list; expected a [user, assistant]',
        ),
        ({"instruction": "a", "output": "b", "history": [["x", ""]]}, '"history"[0] has an empty assistant reply'),
    ],
)
def test_alpaca_problems(tmp_path, row, expected):
    assert expected in problem(tmp_path, row, format="alpaca")


def test_alpaca_preference_and_kto(tmp_path):
    pair = one(tmp_path, {"instruction": "Pick", "chosen": "good", "rejected": "bad"}, "preference")
    assert pair == PreferencePair([Message("user", "Pick")], Message("assistant", "good"), Message("assistant", "bad"))
    kto = one(tmp_path, {"instruction": "Pick", "output": "meh", "kto_tag": False}, "kto", columns={"label": "kto_tag"})
    assert kto == KTOExample([Message("user", "Pick")], Message("assistant", "meh"), False)


def test_alpaca_as_pretraining_documents_joins_instruction_input_and_output(tmp_path):
    row = {"instruction": "Translate", "input": "chat", "output": "cat"}
    assert one(tmp_path, row, "text", format="alpaca") == Text("Translate\nchat\ncat")
    assert one(tmp_path, {**row, "input": ""}, "text", format="alpaca") == Text("Translate\ncat")
    assert one(tmp_path, {"instruction": "Only this."}, "text", format="alpaca") == Text("Only this.")


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"instruction": "Q", "output": "A", "system": "S"}, '"system" holds a system prompt: a conversation, not a'),
        ({"instruction": "Q", "output": "A", "history": [["a", "b"]]}, '"history" holds earlier turns: a conversation'),
        ({"instruction": "", "input": "", "output": ""}, '"instruction", "input" and "output" are empty'),
    ],
)
def test_alpaca_documents_refuse_conversations_and_empty_records(tmp_path, row, expected):
    assert expected in problem(tmp_path, row, "text", format="alpaca")


def test_alpaca_reads_tools(tmp_path):
    row = {"instruction": "Weather in Oslo?", "output": "Rain.", "tools": json.dumps([WEATHER_TOOL])}
    assert one(tmp_path, row).tools == [{"type": "function", "function": WEATHER_TOOL}]
    pair = one(tmp_path, {**row, "chosen": "Rain.", "rejected": "Sun."}, "preference", format="alpaca")
    assert pair.tools == [{"type": "function", "function": WEATHER_TOOL}]


# -- sharegpt --------------------------------------------------------------------------------------------------


def test_sharegpt_with_system_turn_and_system_column(tmp_path):
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello", "weight": None}]
    expected = [Message("system", "Be nice."), Message("user", "Hi"), Message("assistant", "Hello")]
    assert one(tmp_path, {"conversations": [{"from": "system", "value": "Be nice."}, *turns]}).messages == expected
    assert one(tmp_path, {"conversations": turns, "system": "Be nice."}).messages == expected


def test_sharegpt_function_call_and_observation_become_tool_calls_and_results(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo and Rome?"},
            {
                "from": "function_call",
                "value": json.dumps(
                    [
                        {"name": "get_weather", "arguments": {"city": "Oslo"}},
                        {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    ]
                ),
            },
            {"from": "observation", "value": '["rain", "sun"]'},
            {"from": "gpt", "value": "Rain in Oslo, sun in Rome."},
            {"from": "human", "value": "And Paris?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
            {"from": "observation", "value": "clouds"},
            {"from": "gpt", "value": "Clouds."},
        ],
        "tools": json.dumps([WEATHER_TOOL]),
    }
    conv = one(tmp_path, row)
    assert conv.messages[1] == Message(
        "assistant",
        "",
        tool_calls=[ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Rome"})],
    )
    assert conv.messages[2] == Message("tool", '["rain", "sun"]')
    assert conv.messages[5].tool_calls == [ToolCall("get_weather", {"city": "Paris"})]
    assert conv.tools == [{"type": "function", "function": WEATHER_TOOL}]
    assert [m["role"] for m in conv.as_dicts()] == ["user", "assistant", "tool", "assistant"] * 2


def test_an_observation_after_a_plain_reply_is_a_tool_result_as_llamafactory_reads_it(tmp_path):
    turns = [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "gpt", "value": "Action: get_weather(city='Oslo')"},  # the call written in the reply's text
        {"from": "observation", "value": "rain"},
        {"from": "gpt", "value": "It rains."},
    ]
    assert one(tmp_path, {"conversations": turns}).messages == [
        Message("user", "Weather in Oslo?"),
        Message("assistant", "Action: get_weather(city='Oslo')"),
        Message("tool", "rain"),
        Message("assistant", "It rains."),
    ]
    openai = [{"role": m.role, "content": m.content} for m in one(tmp_path, {"conversations": turns}).messages]
    assert one(tmp_path, {"messages": openai}).messages[2] == Message("tool", "rain")  # what data convert writes
    wrong = [turns[0], turns[2], turns[3]]
    assert "conversations[1] has role observation after a human message; expected gpt or function_call" in problem(
        tmp_path, {"conversations": wrong}
    )


def test_sharegpt_role_content_variant_and_custom_tags(tmp_path):
    variant = {"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    assert one(tmp_path, variant).messages == [Message("user", "Hi"), Message("assistant", "Yo")]
    tagged = {"dialog": [{"speaker": "USER", "text": "Hi"}, {"speaker": "BOT", "text": "Yo"}]}
    conv = one(
        tmp_path,
        tagged,
        format="sharegpt",
        columns={"conversations": "dialog"},
        tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "USER", "assistant_tag": "BOT"},
    )
    assert conv.messages == [Message("user", "Hi"), Message("assistant", "Yo")]


@pytest.mark.parametrize(
    "turns, expected",
    [
        (
            [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}],
            "conversations[1] has role human after a human message; expected gpt or function_call",
        ),
        ([{"from": "gpt", "value": "a"}], "conversations[0] has role gpt first; expected human"),
        (
            [
                {"from": "human", "value": "a"},
                {"from": "function_call", "value": '{"name": "f"}'},
                {"from": "gpt", "value": "b"},
            ],
            "conversations[2] has role gpt after a function_call message; expected observation",
        ),
        (
            [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}],
            'conversations[1] has from "bot"; expected one of human, user, gpt, assistant',
        ),
        (
            [{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}],
            "conversations[1] (gpt) has empty value; expected the reply text",
        ),
        ([{"from": "human", "value": "a"}, {"from": "gpt"}], 'conversations[1] has no "value"'),
        (
            [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{oops"}],
            "conversations[1] is not valid JSON (Expecting property name enclosed in double quotes at column 2); "
            "expected",
        ),
        (
            [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b", "weight": 0}],
            'conversations[1] has key "weight", which lmforge does not read',
        ),
        (
            [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}],
            "the last message (conversations[2]) has role human; expected gpt or function_call",
        ),
    ],
)
def test_sharegpt_problems_name_the_turn_and_the_data_spelling(tmp_path, turns, expected):
    assert expected in problem(tmp_path, {"conversations": turns})


def test_sharegpt_preference_and_kto(tmp_path):
    prompt = [{"from": "human", "value": "Q"}]
    pair = one(
        tmp_path,
        {
            "conversations": prompt,
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        },
        "preference",
    )
    assert pair == PreferencePair([Message("user", "Q")], Message("assistant", "good"), Message("assistant", "bad"))
    message = problem(
        tmp_path,
        {
            "conversations": prompt + [{"from": "gpt", "value": "x"}],
            "chosen": {"from": "gpt", "value": "g"},
            "rejected": "r",
        },
        "preference",
    )
    assert "the chosen reply has role gpt or function_call after a gpt message; expected human" in message
    kto = one(tmp_path, {"conversations": prompt + [{"from": "gpt", "value": "A"}], "label": True}, "kto")
    assert kto == KTOExample([Message("user", "Q")], Message("assistant", "A"), True)


# -- OpenAI messages -------------------------------------------------------------------------------------------


def test_openai_messages_with_tool_calls_tool_results_tools_and_reasoning(tmp_path):
    row = {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should call the tool.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "rain"},
            {"role": "assistant", "content": "It rains."},
        ],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
    }
    conv = one(tmp_path, row)
    assert conv.messages[1] == Message("user", "Weather in Oslo?")
    call = ToolCall("get_weather", {"city": "Oslo"}, "call_1")
    assert conv.messages[2] == Message("assistant", "", tool_calls=[call], reasoning="I should call the tool.")
    assert conv.messages[3] == Message("tool", "rain", tool_call_id="call_1", name="get_weather")
    assert conv.tools == row["tools"]
    assert conv.as_dicts()[2]["tool_calls"][0] == {
        "type": "function",
        "id": "call_1",
        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
    }


@pytest.mark.parametrize(
    "messages, expected",
    [
        (
            [{"role": "user", "content": "a"}, {"role": "tool", "content": "c"}, {"role": "assistant", "content": "b"}],
            "message 1 has role tool after a user message; expected assistant",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
                {"role": "assistant", "content": "b"},
            ],
            "message 2 has role assistant after an assistant message; expected tool",
        ),
        (
            [{"role": "user", "content": "a", "tool_calls": [{"name": "f"}]}, {"role": "assistant", "content": "b"}],
            "message 0 (user) has tool_calls; expected them on assistant messages only",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                },
            ],
            "message 1 tool_calls[0] arguments is a string that is not valid JSON",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": None, "tool_calls": [{"function": {}}]},
            ],
            "message 1 tool_calls[0] has name null; expected the tool's name",
        ),
        (
            [{"role": "user", "content": "a", "reasoning_content": "x"}, {"role": "assistant", "content": "b"}],
            "message 0 (user) has reasoning_content; expected it on assistant messages only",
        ),
        ([{"from": "human", "value": "a"}], 'message 0 has "from" and no "role": this looks like sharegpt data'),
    ],
)
def test_openai_message_problems(tmp_path, messages, expected):
    assert expected in problem(tmp_path, {"messages": messages})


def test_thinking_is_read_as_reasoning_and_one_spelling_is_allowed(tmp_path):
    user = {"role": "user", "content": "Q"}
    reply = {"role": "assistant", "content": "A", "thinking": "t"}
    assert one(tmp_path, {"messages": [user, reply]}).messages[1] == Message("assistant", "A", reasoning="t")
    for other in ("reasoning_content", "reasoning"):
        row = {"messages": [user, {**reply, other: "u"}]}
        assert f"message 1 has both {other} and thinking; expected the reasoning in one of them" in problem(
            tmp_path, row
        )
    row = {"messages": [{**user, "thinking": "t"}, {"role": "assistant", "content": "A"}]}
    assert "message 0 (user) has thinking; expected it on assistant messages only" in problem(tmp_path, row)


def part(kind: str, value) -> dict:
    return {"type": kind, "value": value}


def test_llamafactory_typed_parts_and_loss_weights(tmp_path):
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
    row = {
        "messages": [
            {"role": "system", "content": [part("text", "Use tools.")], "loss_weight": 0.0},
            {"role": "user", "content": [part("text", "Weather "), part("text", "in Oslo?")], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [part("reasoning", "Call it."), part("tool_call", call)],
                "loss_weight": 1,
            },
            {"role": "tool", "content": [part("text", "rain")], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [part("reasoning", "It "), part("reasoning", "rains."), part("text", "Rain.")],
            },
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
            {"role": "assistant", "content": [part("text", "Bye.")], "loss_weight": 0.0},
        ],
        "tools": json.dumps([WEATHER_TOOL]),
    }
    conv = one(tmp_path, row)
    assert conv.messages == [
        Message("system", "Use tools."),
        Message("user", "Weather in Oslo?"),
        Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})], reasoning="Call it."),
        Message("tool", "rain"),
        Message("assistant", "Rain.", reasoning="It rains."),
        Message("user", "Thanks"),
        Message("assistant", "Bye.", trained=False),
    ]
    assert "trained" not in conv.as_dicts()[-1] and "loss_weight" not in conv.as_dicts()[-1]


USER, REPLY = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}


@pytest.mark.parametrize(
    "messages, expected",
    [
        (
            [USER, {**REPLY, "loss_weight": 0.5}],
            "message 1 (assistant) has loss_weight 0.5; lmforge trains a turn whole",
        ),
        ([USER, {**REPLY, "loss_weight": "1"}], "message 1 has loss_weight a string; expected 0 or 1"),
        ([{**USER, "loss_weight": 1}, REPLY], "message 0 (user) has loss_weight 1; lmforge trains assistant messages"),
        (
            [
                {
                    "role": "user",
                    "content": [part("text", "What is this?"), {"type": "image_url", "image_url": "x.png"}],
                },
                REPLY,
            ],
            "message 0 content[1] is a media part (image_url); lmforge trains text-only models",
        ),
        (
            [{"role": "user", "content": [part("image", "1.jpg")]}, REPLY],
            "content[0] is a media part (image); lmforge trains",
        ),
        ([USER, {**REPLY, "content": [part("citation", "x")]}], 'content[0] is a part of type "citation"; expected'),
        ([USER, {**REPLY, "content": [{"type": "text", "text": "a", "value": "b"}]}], 'has both "text" and "value"'),
        ([USER, {**REPLY, "content": [part("tool_call", "{bad")]}], "content[0] is not valid JSON"),
        ([{"role": "user", "content": [part("tool_call", '{"name": "f"}')]}, REPLY], "(user) has tool_call parts"),
        (
            [USER, {**REPLY, "content": [part("reasoning", "r"), part("text", "A")], "reasoning": "s"}],
            "has both reasoning and a reasoning part",
        ),
        (
            [USER, {**REPLY, "content": [part("tool_call", '{"name": "f"}')], "tool_calls": [{"name": "g"}]}],
            "has tool_calls and tool_call parts in its content; expected the calls in one place",
        ),
    ],
)
def test_typed_part_and_loss_weight_problems(tmp_path, messages, expected):
    assert expected in problem(tmp_path, {"messages": messages})


def test_llamafactory_pairs_of_whole_conversations(tmp_path):
    shared = [
        {"role": "system", "content": [part("text", "Be brief.")], "loss_weight": 0.0},
        {"role": "user", "content": [part("text", "Translate chat")], "loss_weight": 0.0},
    ]
    row = {
        "chosen_messages": [*shared, {"role": "assistant", "content": [part("text", "cat")], "loss_weight": 1.0}],
        "rejected_messages": [*shared, {"role": "assistant", "content": [part("text", "dog")], "loss_weight": 1.0}],
    }
    assert one(tmp_path, row, "preference") == PreferencePair(
        [Message("system", "Be brief."), Message("user", "Translate chat")],
        Message("assistant", "cat"),
        Message("assistant", "dog"),
    )
    row["rejected_messages"] = shared
    assert 'the last message of "rejected_messages" has role user; expected assistant' in problem(
        tmp_path, row, "preference"
    )


def test_a_preference_reply_with_loss_weight_0_is_refused(tmp_path):
    row = {"prompt": "Q", "chosen": [{**REPLY, "loss_weight": 0}], "rejected": "B"}
    assert 'the last message of "chosen" has loss_weight 0, but it is the reply' in problem(tmp_path, row, "preference")
    prompt = [USER, {**REPLY, "loss_weight": 0}, {"role": "user", "content": "Q2"}]
    pair = one(tmp_path, {"prompt": prompt, "chosen": "g", "rejected": "b"}, "preference")
    assert pair.prompt[1].trained is False


def test_tools_must_name_the_tool(tmp_path):
    row = {
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        "tools": [{"description": "nameless"}],
    }
    assert '"tools"[0] is an object without a tool name; expected a JSON schema' in problem(tmp_path, row)


# -- preference pairs: three shapes, and KTO -------------------------------------------------------------------


def test_preference_with_strings(tmp_path):
    pair = one(tmp_path, {"prompt": "Q", "chosen": "good", "rejected": "bad"}, "preference")
    assert pair == PreferencePair([Message("user", "Q")], Message("assistant", "good"), Message("assistant", "bad"))


def test_preference_with_a_prompt_conversation_and_reply_messages(tmp_path):
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    pair = one(
        tmp_path,
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": {"role": "assistant", "content": "bad"},
        },
        "preference",
        format="preference",
    )
    assert pair.prompt == [Message("system", "S"), Message("user", "Q")]
    assert (pair.chosen.content, pair.rejected.content) == ("good", "bad")


def test_preference_with_whole_chosen_and_rejected_conversations(tmp_path):
    shared = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q2"},
    ]
    row = {
        "chosen": [*shared, {"role": "assistant", "content": "good"}],
        "rejected": [*shared, {"role": "assistant", "content": "bad"}],
    }
    pair = one(tmp_path, row, "preference")
    assert pair.prompt == [Message("user", "Q"), Message("assistant", "A"), Message("user", "Q2")]
    assert pair.conversation("rejected").messages[-1] == Message("assistant", "bad")
    row["rejected"][0] = {"role": "user", "content": "other"}
    assert "differ before their last message" in problem(tmp_path, row, "preference")


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"prompt": "Q", "chosen": "", "rejected": "b"}, '"chosen" is empty; expected the assistant\'s reply text'),
        ({"prompt": "Q", "chosen": "g"}, 'no "rejected" key (keys: prompt, chosen); expected format preference'),
        ({"chosen": "g", "rejected": "b"}, 'no "prompt" key and no earlier messages in the replies'),
        (
            {"prompt": "Q", "chosen": [{"role": "user", "content": "g"}], "rejected": "b"},
            'the last message of "chosen" has role user; expected assistant',
        ),
    ],
)
def test_preference_problems(tmp_path, row, expected):
    assert expected in problem(tmp_path, row, "preference", format="preference")


def test_kto_examples(tmp_path):
    kto = one(tmp_path, {"prompt": "Q", "completion": "A", "label": False}, "kto")
    assert kto == KTOExample([Message("user", "Q")], Message("assistant", "A"), False)
    listed = one(
        tmp_path,
        {
            "prompt": [{"role": "user", "content": "Q"}],
            "completion": [{"role": "assistant", "content": "A"}],
            "label": 1,
        },
        "kto",
        format="kto",
    )
    assert listed == KTOExample([Message("user", "Q")], Message("assistant", "A"), True)
    assert '"label" is "maybe"; expected true (desirable) or false' in problem(
        tmp_path, {"prompt": "Q", "completion": "A", "label": "maybe"}, "kto"
    )


# -- configuration errors --------------------------------------------------------------------------------------


def test_format_kind_columns_and_tags_are_checked(tmp_path):
    pref = {"prompt": "Q", "chosen": "g", "rejected": "b"}
    assert (
        "format preference gives preference records, but conversation records are needed here; expected format "
        "messages or sharegpt or alpaca" in problem(tmp_path, pref, format="preference")
    )
    assert "maps 'question', which format alpaca does not read; expected keys among instruction, input" in problem(
        tmp_path, {"instruction": "a", "output": "b"}, format="alpaca", columns={"question": "q"}
    )
    assert "data.train[].tags applies to sharegpt data, not alpaca" in problem(
        tmp_path, {"instruction": "a", "output": "b"}, tags={"user_tag": "USER"}
    )
    assert "tags has 'speaker_tag'; expected keys among role_tag" in problem(
        tmp_path, {"conversations": []}, format="sharegpt", tags={"speaker_tag": "x"}
    )
    assert "format kto gives kto records, but preference records are needed here" in problem(
        tmp_path, {"prompt": "Q", "completion": "A", "label": True}, "preference"
    )
    assert "cannot tell the format from the keys question; expected one of: messages" in problem(
        tmp_path, {"question": "Q"}, "preference"
    )


def test_columns_steer_auto_detection(tmp_path):
    row = {"messages": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    conv = one(tmp_path, row, columns={"conversations": "messages"})
    assert conv.messages == [Message("user", "Hi"), Message("assistant", "Yo")]


def test_a_reply_string_is_text_even_when_it_looks_like_json(tmp_path):
    pair = one(tmp_path, {"prompt": "List?", "chosen": "[1, 2]", "rejected": "[oops"}, "preference")
    assert (pair.chosen.content, pair.rejected.content) == ("[1, 2]", "[oops")
