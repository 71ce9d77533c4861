/** Script library shapes as GET /api/scripts answers them. */
export type ParamType = 'string' | 'number' | 'boolean' | 'choice' | 'secret';

export interface ParamDef {
  name: string;
  type: ParamType;
  label?: string;
  help?: string;
  required?: boolean;
  default?: string | number | boolean;
  choices?: string[];
  min?: number;
  max?: number;
  integer?: boolean;
  maxLength?: number;
}

export interface ScriptView {
  id: string;
  name: string;
  owner: string;
  description: string;
  interpreter: string;
  tags: string[];
  params: ParamDef[];
  body?: string;
  bodyBytes: number;
  bodySha256: string;
  version: number;
  latestVersion: number;
  createdAt: string;
  updatedAt: string;
  versionCreatedBy: string;
  versionCreatedAt: string;
}
