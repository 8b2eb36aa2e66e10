"""Built-in list prices: USD per million input and output tokens of the providers' common models.

An endpoint's `cost:` in the YAML wins; without one, its upstream model's name is looked up here (the
longest known name it starts with, after any vendor prefix such as `openai/` or Bedrock's
`anthropic.`), so that `gpt-4o-mini-2024-07-18` costs what `gpt-4o-mini` costs. A model that is not
here costs nothing in the ledger until its endpoint gets a `cost:`. Vendors change prices: the table
is dated (PRICES_AS_OF) and the README says so.
"""

from __future__ import annotations

from decimal import Decimal

PRICES_AS_OF = "2025-08"

# name prefix: (input, output) USD per million tokens; embeddings have no output tokens.
_TABLE: dict[str, tuple[str, str]] = {
    # OpenAI (and Azure OpenAI, OpenRouter's openai/...)
    "gpt-5": ("1.25", "10"), "gpt-5-mini": ("0.25", "2"), "gpt-5-nano": ("0.05", "0.40"),
    "gpt-4.1": ("2", "8"), "gpt-4.1-mini": ("0.40", "1.60"), "gpt-4.1-nano": ("0.10", "0.40"),
    "gpt-4o": ("2.50", "10"), "gpt-4o-mini": ("0.15", "0.60"), "gpt-4-turbo": ("10", "30"), "gpt-4": ("30", "60"),
    "gpt-3.5-turbo": ("0.50", "1.50"), "gpt-3.5-turbo-instruct": ("1.50", "2"),
    "o1": ("15", "60"), "o1-mini": ("1.10", "4.40"), "o3": ("2", "8"), "o3-mini": ("1.10", "4.40"),
    "o4-mini": ("1.10", "4.40"),
    "text-embedding-3-small": ("0.02", "0"), "text-embedding-3-large": ("0.13", "0"),
    "text-embedding-ada-002": ("0.10", "0"),
    # Anthropic (and Bedrock's anthropic.*)
    "claude-opus-4": ("15", "75"), "claude-sonnet-4": ("3", "15"), "claude-3-7-sonnet": ("3", "15"),
    "claude-3-5-sonnet": ("3", "15"), "claude-3-5-haiku": ("0.80", "4"), "claude-3-opus": ("15", "75"),
    "claude-3-haiku": ("0.25", "1.25"), "claude-3-sonnet": ("3", "15"),
    # Google Gemini
    "gemini-2.5-pro": ("1.25", "10"), "gemini-2.5-flash": ("0.30", "2.50"), "gemini-2.5-flash-lite": ("0.10", "0.40"),
    "gemini-2.0-flash": ("0.10", "0.40"), "gemini-2.0-flash-lite": ("0.075", "0.30"),
    "gemini-1.5-pro": ("1.25", "5"), "gemini-1.5-flash": ("0.075", "0.30"),
    "text-embedding-004": ("0", "0"), "gemini-embedding-001": ("0.15", "0"),
    # Mistral
    "mistral-large": ("2", "6"), "mistral-medium": ("0.40", "2"), "mistral-small": ("0.10", "0.30"),
    "codestral": ("0.30", "0.90"), "open-mistral-nemo": ("0.15", "0.15"), "mistral-embed": ("0.10", "0"),
    # Cohere
    "command-r-plus": ("2.50", "10"), "command-r": ("0.15", "0.60"), "command-a": ("2.50", "10"),
    "embed-english-v3.0": ("0.10", "0"), "embed-multilingual-v3.0": ("0.10", "0"),
    # Amazon (Bedrock)
    "amazon.nova-micro": ("0.035", "0.14"), "amazon.nova-lite": ("0.06", "0.24"), "amazon.nova-pro": ("0.80", "3.20"),
    "amazon.titan-embed-text-v2": ("0.02", "0"), "amazon.titan-embed-text-v1": ("0.10", "0"),
    "meta.llama3-1-70b-instruct": ("0.72", "0.72"), "meta.llama3-1-8b-instruct": ("0.22", "0.22"),
    # Groq
    "llama-3.1-8b-instant": ("0.05", "0.08"), "llama-3.3-70b-versatile": ("0.59", "0.79"),
    # DeepSeek
    "deepseek-chat": ("0.27", "1.10"), "deepseek-reasoner": ("0.55", "2.19"),
    # xAI
    "grok-4": ("3", "15"), "grok-3": ("3", "15"), "grok-3-mini": ("0.30", "0.50"),
}
_PREFIXES = sorted(_TABLE, key=len, reverse=True)


def list_price(model: str | None) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per million tokens for a model name, or None when it is not in the table."""
    if not model:
        return None
    name = model.strip().lower()
    candidates = [name, name.rsplit("/", 1)[-1]]
    if "." in name and not name.startswith("amazon.") and not name.startswith("meta."):
        candidates.append(name.split(".", 1)[1])  # Bedrock's "anthropic.claude-..." and "us.anthropic...."
        candidates.append(name.split(".", 2)[-1])
    for candidate in candidates:
        for prefix in _PREFIXES:
            if candidate.startswith(prefix):
                price_in, price_out = _TABLE[prefix]
                return Decimal(price_in), Decimal(price_out)
    return None


def picousd_per_token(usd_per_million: Decimal) -> int:
    """USD per million tokens → pico-dollars per token (exact for prices with up to 6 decimals)."""
    return int(usd_per_million * 1_000_000)
