"""Quality inspection (双重质检): each ended day a share of the conversations
recorded with operators is drawn at random, checked automatically (silences,
talk-over, greeting, closing, the number read back, the caller's mood at the
end), and scored by reviewers who hear the recording with names and numbers
hidden; admins read the results per operator.

- ivr/quality/checks.py: the automatic checks on one recording;
- ivr/quality/samples.py: samples, checks and reviews in the store;
- ivr/quality/inspection.py: the daily draw and the checks, on the lease holder;
- ivr/web/quality.py: the reviewers' page and the admins' results.
"""
