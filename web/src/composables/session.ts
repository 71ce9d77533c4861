/** The signed-in user and role checks (buttons a role may not use are hidden; the server still enforces). */
import { computed, ref } from 'vue';
import type { Role } from '../../../protocol/console-messages';
import type { UserView } from '../../../protocol/rest';
import { ApiError, api, onUnauthorized } from '../api/client';

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
const user = ref<UserView | null>(null);
let loading: Promise<UserView | null> | null = null;
/**
 * Bumped by sign-in and sign-out: an answer to a question asked before them is stale (a 401 asked
 * for by the socket before the user signed in must not sign the new session out).
 */
let generation = 0;

/** Loads /api/auth/me once (or again with `force`); null when not signed in. */
export function loadSession(force = false): Promise<UserView | null> {
  if (loading && !force) return loading;
  const asked = generation;
  loading = api.get<{ user: UserView }>('/api/auth/me').then(
    (r) => (asked === generation ? (user.value = r.user) : user.value),
    (err: unknown) => {
      if (asked !== generation) return user.value;
      if (err instanceof ApiError && err.status === 401) return (user.value = null);
      loading = null;
      throw err;
    },
  );
  return loading;
}

export async function login(username: string, password: string): Promise<UserView> {
  const r = await api.post<{ user: UserView }>('/api/auth/login', { username, password });
  generation++;
  user.value = r.user;
  loading = Promise.resolve(r.user);
  return r.user;
}

export async function logout(): Promise<void> {
  try {
    await api.post('/api/auth/logout');
  } finally {
    generation++;
    user.value = null;
    loading = Promise.resolve(null);
  }
}

/** Marks the session as gone (a 401 somewhere). */
export function sessionExpired(): void {
  user.value = null;
  loading = null;
}
onUnauthorized(sessionExpired);

export function useSession() {
  const role = computed<Role | null>(() => user.value?.role ?? null);
  const can = (r: Role) => role.value !== null && RANK[role.value] >= RANK[r];
  return { user, role, can };
}
