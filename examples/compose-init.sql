-- Run once by each compose segment at its first start (as the image's
-- superuser, `hopper`): the role hopper's runner and trainers log in as.
-- Not a superuser — flight-servers refuse those unless --allow-superuser —
-- and able to read what `hopper` creates in `public`, and to write results.
CREATE ROLE analyst LOGIN PASSWORD 'analyst';
GRANT USAGE, CREATE ON SCHEMA public TO analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE hopper IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
