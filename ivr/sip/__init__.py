"""SIP signalling. Nothing outside ivr.sip imports aiosipua."""
