-- Stage 2: playback_daily -> playback_daily_agg, per account and day. Distinct counts need every
-- play of the account's day (the whole partition of the key), not just the new ones.
SELECT event_day,
       account_id,
       count(*) AS plays,
       count(DISTINCT title_id) AS titles,
       count(DISTINCT device) AS devices,
       sum(view_seconds) AS view_seconds,
       count(*) FILTER (WHERE qualified) AS qualified_plays,
       max(event_time) AS last_play_at
FROM daily
GROUP BY event_day, account_id
