#!/usr/bin/env python3
"""Renders every template in this folder with Jinja2 under the settings transformers'
apply_chat_template uses (sandboxed, trim_blocks, lstrip_blocks, loop controls, tojson as
json.dumps, raise_exception, strftime_now) for each conversation below, and writes
cases.json: what braid's renderer must reproduce byte for byte (or the error it must
raise). Run it after adding a template or a conversation; the test reads only cases.json."""
import glob
import json
import os

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

CHAT = [
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
SYSTEM = [{"role": "system", "content": "You are a friendly chatbot who always responds in the style of a pirate"}]
UNICODE = [
    {"role": "user", "content": "  Grüße, 世界! Tabs\tand \"quotes\" 'single' \\ back\nslash  "},
    {"role": "assistant", "content": "¡Hola! 🦜\n"},
    {"role": "user", "content": "Once more"},
]
THINKING = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
    {"role": "user", "content": "And 3 + 3?"},
]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]
TOOL_CALLS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2.5}}}]},
    {"role": "tool", "content": "{\"temp\": -3}"},
    {"role": "tool", "content": "{\"wind\": 7}"},
    {"role": "user", "content": "Thanks"},
]
FUNCTIONS = [
    {"role": "functions", "content": json.dumps([{"name": "get_stock_price", "parameters": {"symbol": "string"}}], indent=4)},
    {"role": "system", "content": "You are a helpful assistant with access to functions."},
    {"role": "user", "content": "Price of AAPL?"},
]

CONVERSATIONS = {
    "chat": CHAT,
    "system_chat": SYSTEM + CHAT,
    "unicode": UNICODE,
    "thinking": THINKING,
    "tool_calls": TOOL_CALLS,
    "functions": FUNCTIONS,
    "single": [{"role": "user", "content": "Hi"}],
}

cases = []
for path in sorted(glob.glob(os.path.join(HERE, "*.jinja"))):
    name = os.path.basename(path)
    source = open(path, encoding="utf-8").read()
    template = env.from_string(source)
    for conv_name, messages in CONVERSATIONS.items():
        for gen in (False, True):
            for tools in (None, TOOLS):
                if tools is not None and conv_name not in ("tool_calls", "single"):
                    continue
                ctx = {"messages": messages, "add_generation_prompt": gen, "bos_token": "<s>", "eos_token": "</s>"}
                if tools is not None:
                    ctx["tools"] = tools
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": gen,
                        "tools": tools, "messages": messages}
                try:
                    case["expected"] = template.render(**ctx)
                except TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)

with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{len(cases)} cases from {len(glob.glob(os.path.join(HERE, '*.jinja')))} templates")
