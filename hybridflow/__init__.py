"""HybridFlow: a WhatsApp AI responder for the Evolution API that steps aside when a human types."""

__version__ = "0.1.0"
