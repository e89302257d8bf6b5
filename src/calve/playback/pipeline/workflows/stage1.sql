-- Stage 1: playback events -> playback_daily, one row per play: cleaned and enriched.
SELECT event_id,
       account_id,
       title_id,
       device,
       event_day,
       event_time,
       view_seconds,
       view_seconds >= 60 AS qualified,
       CAST(hour(event_time) AS INTEGER) AS event_hour
FROM events
WHERE view_seconds > 0
