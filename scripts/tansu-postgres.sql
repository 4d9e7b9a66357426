-- The tables tansu 0.6's PostgreSQL storage engine reads and writes, for
-- `scripts/kafka start --postgres URL`. tansu does not create them itself; this file
-- is Tidemark's, written against the statements the engine runs and the Rust types
-- it binds and reads (tokio-postgres checks both: an i16 needs smallint, an i64
-- bigint, a SystemTime timestamptz). Idempotent: `start` applies it every time.
--
-- tansu 0.6 deletes a topic by deleting its rows everywhere (records, partitions, …)
-- and then running `delete from topic where topic.cluster in (…)`, which names every
-- topic of the cluster. The trigger at the end lets that statement delete only topics
-- without partitions left, which is the one being deleted. Foreign keys do not
-- cascade, so even without the trigger the statement could only fail, never take
-- another topic's records with it.

create table if not exists cluster (
    id integer primary key generated always as identity,
    name text not null unique,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists topic (
    id integer primary key generated always as identity,
    cluster integer not null references cluster (id),
    name text not null,
    uuid uuid not null,
    partitions integer not null,
    replication_factor integer not null,
    is_internal boolean not null default false,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (cluster, name),
    unique (cluster, uuid)
);

create table if not exists topition (
    id integer primary key generated always as identity,
    topic integer not null references topic (id),
    partition integer not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (topic, partition)
);

create table if not exists watermark (
    id integer primary key generated always as identity,
    topition integer not null unique references topition (id),
    low bigint,
    high bigint,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists topic_configuration (
    id integer primary key generated always as identity,
    topic integer not null references topic (id),
    name text not null,
    value text,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (topic, name)
);

-- transaction_id tells a fetch whether the writing transaction is older than every
-- running one (`pg_snapshot_xmin`); it must never be null.
create table if not exists record (
    topition integer not null references topition (id),
    offset_id bigint not null,
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamptz,
    k bytea,
    v bytea,
    transaction_id xid8 not null default pg_current_xact_id(),
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    primary key (topition, offset_id)
);

-- A fetch reads each record's headers with one query by (topition, offset_id).
-- Headers belong to their record: retention and compaction delete records alone, and
-- the trigger at the end of this file deletes their headers in the same statement.
-- There is no foreign key to the record (there was one before 2026-12-05): checking
-- it cost an index lookup for each of the eight header rows an event's record has,
-- about a sixth of the broker database's time at the benchmark's command rate
-- (docs/benchmarks.md). tansu writes a record and its headers in one transaction.
create table if not exists header (
    topition integer not null,
    offset_id bigint not null,
    k bytea,
    v bytea,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);
alter table header drop constraint if exists header_topition_offset_id_fkey;
create index if not exists header_record on header (topition, offset_id);

create table if not exists consumer_group (
    id integer primary key generated always as identity,
    cluster integer not null references cluster (id),
    name text not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists consumer_group_detail (
    id integer primary key generated always as identity,
    consumer_group integer not null unique references consumer_group (id),
    e_tag uuid not null,
    detail jsonb not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists consumer_offset (
    id integer primary key generated always as identity,
    consumer_group integer not null references consumer_group (id),
    topition integer not null references topition (id),
    committed_offset bigint not null,
    leader_epoch integer,
    timestamp timestamptz,
    metadata text,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (consumer_group, topition)
);

create table if not exists producer (
    id bigint primary key generated always as identity,
    cluster integer not null references cluster (id),
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists producer_epoch (
    id integer primary key generated always as identity,
    producer bigint not null references producer (id),
    epoch smallint not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (producer, epoch)
);

create table if not exists producer_detail (
    id integer primary key generated always as identity,
    producer_epoch integer not null references producer_epoch (id),
    topition integer not null references topition (id),
    sequence integer not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (producer_epoch, topition)
);

create table if not exists scram_credential (
    id integer primary key generated always as identity,
    cluster integer not null references cluster (id),
    username text not null,
    mechanism text not null,
    salt bytea not null,
    iterations integer not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (cluster, username, mechanism)
);

create table if not exists txn (
    id integer primary key generated always as identity,
    cluster integer not null references cluster (id),
    name text not null,
    producer bigint not null references producer (id),
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists txn_detail (
    id integer primary key generated always as identity,
    "transaction" integer not null references txn (id),
    producer_epoch integer not null references producer_epoch (id),
    transaction_timeout_ms integer not null,
    started_at timestamptz,
    status text,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique ("transaction", producer_epoch)
);

create table if not exists txn_topition (
    id integer primary key generated always as identity,
    txn_detail integer not null references txn_detail (id),
    topition integer not null references topition (id),
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp,
    unique (txn_detail, topition)
);

create table if not exists txn_produce_offset (
    id integer primary key generated always as identity,
    txn_topition integer not null unique references txn_topition (id),
    offset_start bigint not null,
    offset_end bigint not null,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists txn_offset_commit (
    id integer primary key generated always as identity,
    txn_detail integer not null references txn_detail (id),
    consumer_group integer not null references consumer_group (id),
    generation_id integer,
    member_id text,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

create table if not exists txn_offset_commit_tp (
    id integer primary key generated always as identity,
    offset_commit integer not null references txn_offset_commit (id),
    topition integer not null references topition (id),
    committed_offset bigint not null,
    leader_epoch integer,
    metadata text,
    last_updated timestamptz not null default current_timestamp,
    created_at timestamptz not null default current_timestamp
);

-- See the head of this file: a topic goes only once its partitions are gone.
create or replace function tidemark_keep_topics_with_partitions() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from topition where topition.topic = old.id) then
        return null;
    end if;
    return old;
end
$$;

drop trigger if exists tidemark_keep_topics_with_partitions on topic;
create trigger tidemark_keep_topics_with_partitions
    before delete on topic
    for each row execute function tidemark_keep_topics_with_partitions();

-- See the header table: a statement that deletes records deletes their headers too.
create or replace function tidemark_delete_headers_of_records() returns trigger
language plpgsql as $$
begin
    delete from header
     using deleted
     where header.topition = deleted.topition
       and header.offset_id = deleted.offset_id;
    return null;
end
$$;

drop trigger if exists tidemark_delete_headers_of_records on record;
create trigger tidemark_delete_headers_of_records
    after delete on record
    referencing old table as deleted
    for each statement execute function tidemark_delete_headers_of_records();
