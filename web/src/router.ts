/** Routes. Feature views load lazily so the agents view does not wait for xterm.js or CodeMirror. */
import { createRouter, createWebHistory, type RouteLocationNormalized, type RouteRecordRaw } from 'vue-router';
import type { Role } from '../../protocol/console-messages';
import { crumbLabel } from './composables/crumb';
import { loadSession, useSession } from './composables/session';
import { connectEarly, dropEarly } from './composables/socket';

declare module 'vue-router' {
  interface RouteMeta {
    public?: boolean;
    role?: Role;
    title?: string;
    /** Detail pages: the list page they belong to (the breadcrumb's first step). */
    parent?: { to: string; title: string };
  }
}

const routes: RouteRecordRaw[] = [
  { path: '/login', name: 'login', component: () => import('./features/auth/LoginView.vue'), meta: { public: true, title: 'Sign in' } },
  { path: '/', name: 'dashboard', component: () => import('./features/dashboard/DashboardView.vue'), meta: { title: 'Dashboard' } },
  { path: '/agents', name: 'agents', component: () => import('./features/agents/AgentsView.vue'), meta: { title: 'Agents' } },
  {
    path: '/agents/:id',
    name: 'agent',
    component: () => import('./features/agents/AgentDetailView.vue'),
    props: true,
    meta: { title: 'Agent', parent: { to: '/agents', title: 'Agents' } },
  },
  { path: '/run', name: 'run', component: () => import('./features/tasks/RunScriptView.vue'), meta: { title: 'Run script', role: 'operator' } },
  { path: '/library/:id?', name: 'library', component: () => import('./features/library/LibraryView.vue'), props: true, meta: { title: 'Library' } },
  { path: '/schedules/:id?', name: 'schedules', component: () => import('./features/schedules/SchedulesView.vue'), props: true, meta: { title: 'Schedules' } },
  { path: '/files/:id?', name: 'files', component: () => import('./features/files/FilesView.vue'), props: true, meta: { title: 'Files' } },
  { path: '/tasks', name: 'tasks', component: () => import('./features/tasks/HistoryView.vue'), meta: { title: 'History' } },
  {
    path: '/tasks/:id',
    name: 'task',
    component: () => import('./features/tasks/TaskRunView.vue'),
    props: true,
    meta: { title: 'Task', parent: { to: '/tasks', title: 'History' } },
  },
  { path: '/terminals', name: 'terminals', component: () => import('./features/terminals/TerminalsView.vue'), meta: { title: 'Terminals' } },
  {
    path: '/terminals/broadcast',
    name: 'broadcast',
    component: () => import('./features/terminals/BroadcastView.vue'),
    meta: { title: 'Broadcast terminals', parent: { to: '/terminals', title: 'Terminals' } },
  },
  { path: '/recordings', name: 'recordings', component: () => import('./features/terminals/RecordingsView.vue'), meta: { title: 'Recordings' } },
  { path: '/updates', name: 'updates', component: () => import('./features/updates/UpdatesView.vue'), meta: { title: 'Updates' } },
  {
    path: '/updates/rollouts/:id',
    name: 'rollout',
    component: () => import('./features/updates/RolloutView.vue'),
    props: true,
    meta: { title: 'Rollout', parent: { to: '/updates', title: 'Updates' } },
  },
  { path: '/tokens', name: 'tokens', component: () => import('./features/admin/TokensView.vue'), meta: { title: 'API tokens' } },
  { path: '/admin', name: 'admin', component: () => import('./features/admin/AdminView.vue'), meta: { title: 'Admin', role: 'admin' } },
  { path: '/:rest(.*)*', redirect: '/' },
];

export const router = createRouter({ history: createWebHistory(), routes });

/**
 * Starts loading a route's lazy view (and, through Vite's preload, its chunks and CSS) without
 * waiting for it. The guard below asks the server who is signed in first; loading the view at the
 * same time instead of after that answer saves a round trip on every cold page load.
 */
function preload(to: RouteLocationNormalized): void {
  for (const record of to.matched) {
    const c = record.components?.['default'];
    if (typeof c === 'function') void (c as () => Promise<unknown>)().catch(() => undefined);
  }
}

router.beforeEach(async (to) => {
  if (to.meta.public) return true;
  preload(to);
  // The console socket too, tentatively (see connectEarly): on a cold load its handshake and
  // `ready` overlap the session question and the view's first render. A no-op once it is open.
  connectEarly();
  let user = null;
  try {
    user = await loadSession();
  } catch {
    // Server unreachable: let the view show its own error; the socket banner says why.
    return true;
  }
  if (!user) {
    dropEarly();
    return { name: 'login', query: { next: to.fullPath } };
  }
  if (to.meta.role && !useSession().can(to.meta.role)) return { name: 'dashboard' };
  return true;
});

router.afterEach((to, from) => {
  // A new subject (another agent, another task): its name comes when its view has loaded it.
  if (to.path !== from.path) crumbLabel.value = null;
  document.title = to.meta.title ? `${to.meta.title} · Muster` : 'Muster';
});
