-- irisflow 0013: results a reorg withdrew are kept and marked, as chain rows are.
--
-- A join pair or a spike made of an on-chain event that a reorg took back is withdrawn by the
-- pipeline (a retraction with target join or spike, see docs/pipelines.md). Its row in
-- window_results stays, marked removed, so what was seen stays auditable; readers of current
-- results add `WHERE NOT removed`. A result written again under the same key (a join paired
-- again with an earlier right event) is no longer removed. Windows, bars and RSI values are
-- never withdrawn: their revisions replace the row.

ALTER TABLE irisflow.window_results ADD COLUMN removed boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN irisflow.window_results.removed IS
    'true once a reorg withdrew this join pair or spike (the on-chain event it was made of is void)';
