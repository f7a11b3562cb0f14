"""The job runner: one loop, one lease protocol, for every kind of background work.

A *queue* is a table of leased rows (``leases.LeasedTable``) plus the code that handles one row.
The runner (``runner.Runner``) claims due rows from each queue up to its capacity, renews the
leases it holds, recovers rows whose worker died (their lease ran out), and waits for the next
poll in between. Deliveries (``comms.outbox.deliver``), internal notifications
(``comms.outbox.notifications``) and scheduled jobs of any kind (``scheduled``: reminders,
checks, later features) are queues on it; a new kind of background work adds a queue or a job
handler, never a loop.
"""
