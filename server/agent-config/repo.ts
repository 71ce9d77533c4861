import { AgentSettings } from '../../protocol/index.js';
import { parseJson, type Db } from '../db/db.js';

/** One rule of live agent configuration: for one agent (`agentId`) or the agents a selector matches. */
export interface ConfigRule {
  id: string;
  agentId: string | null;
  selector: string | null;
  priority: number;
  description: string;
  settings: AgentSettings;
  createdBy: string;
  updatedBy: string;
  createdAt: number;
  updatedAt: number;
}

const ruleFrom = (r: Record<string, unknown>): ConfigRule => {
  const s = AgentSettings.safeParse(parseJson(r['settings'], {}));
  return {
    id: String(r['id']),
    agentId: (r['agent_id'] as string | null) ?? null,
    selector: (r['selector'] as string | null) ?? null,
    priority: Number(r['priority']),
    description: String(r['description']),
    settings: s.success ? s.data : {},
    createdBy: String(r['created_by']),
    updatedBy: String(r['updated_by']),
    createdAt: Number(r['created_at']),
    updatedAt: Number(r['updated_at']),
  };
};

const rowOf = (r: ConfigRule) => ({
  id: r.id,
  agent_id: r.agentId,
  selector: r.selector,
  priority: r.priority,
  description: r.description,
  settings: JSON.stringify(r.settings),
  created_by: r.createdBy,
  updated_by: r.updatedBy,
  created_at: r.createdAt,
  updated_at: r.updatedAt,
});

/** agent_config_rules. */
export class AgentConfigRepo {
  constructor(private readonly db: Db) {}

  async all(): Promise<ConfigRule[]> {
    return (await this.db('agent_config_rules').orderBy([{ column: 'priority' }, { column: 'created_at' }, { column: 'id' }])).map(ruleFrom);
  }

  async insert(r: ConfigRule): Promise<void> {
    await this.db('agent_config_rules').insert(rowOf(r));
  }

  async update(r: ConfigRule): Promise<void> {
    const { id, created_by: _c, created_at: _t, ...rest } = rowOf(r);
    await this.db('agent_config_rules').where({ id }).update(rest);
  }

  async remove(id: string): Promise<boolean> {
    return (await this.db('agent_config_rules').where({ id }).delete()) > 0;
  }
}
