"""Where the real reference files (service responses, granule metadata, headers) live."""

from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
