"""Tickets (工单), from the call to the work order: the ticket and its store
(ticket.py), the intake that fills it during a call (intake.py), what is kept
in memory while the store is away (unwritten.py), search and counts for the
console (search.py), events for screens (events.py), and the work-order
webhook outbox (work_orders.py)."""

from ivr.tickets.ticket import (
    IVR,
    STATUSES,
    UNRELIABLE_NOTICE,
    HistoryEntry,
    Recording,
    Ticket,
    TicketError,
    TicketStore,
)

__all__ = [
    "IVR",
    "STATUSES",
    "UNRELIABLE_NOTICE",
    "HistoryEntry",
    "Recording",
    "Ticket",
    "TicketError",
    "TicketStore",
]
