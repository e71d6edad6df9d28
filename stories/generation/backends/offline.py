"""The offline model: no network, no key. Writes a plausible screenplay from the plot and the personas.

It is a development and demo aid, not an AI (offline_screenplay, offline_parallel). It streams at
``STORY_OFFLINE_TOKENS_PER_SECOND`` and honours max_tokens the way a real model does (stop_reason
"max_tokens"), so continuation works the same with it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from stories.generation.backends.base import BackendEvent, GenerationBackend, ModelCall
from stories.generation.backends.offline_parallel import offline_part_stream
from stories.generation.backends.offline_screenplay import offline_document_stream, offline_screenplay


class OfflineBackend(GenerationBackend):
    async def stream(self, call: ModelCall) -> AsyncGenerator[BackendEvent, None]:
        brief = call.brief
        if brief.task != "screenplay":
            # Parallel mode's outline and scene calls.
            async for event in offline_part_stream(call):
                yield event
            return
        screenplay = offline_screenplay(brief)
        document: dict[str, Any] = (
            screenplay
            if brief.continue_after == 0
            else {"scenes": screenplay["scenes"][brief.continue_after :]}
        )
        async for event in offline_document_stream(call, document):
            yield event
