-- A tenant's events by position: read-your-writes asks for a tenant's last event at
-- or below a position (EventStore::last_tenant_position).
CREATE INDEX events_by_tenant ON events (tenant_id, global_position);
