"""The aiohttp application's keys: the state every handler module reads from the app."""

from __future__ import annotations

from aiohttp import web

from detinfer.engine.lora import LoraRegistry
from detinfer.engine.scheduler import Engine

ENGINE_KEY = web.AppKey("engine", Engine)
LORAS_KEY = web.AppKey("loras", LoraRegistry)
LAUNCH_COMMAND_KEY = web.AppKey("launch_command", str)
"""The engine's arguments as given, for /server_info's launch_command."""
