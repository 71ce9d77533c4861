/**
 * The name of what a detail page shows (an agent's name, a task's name), for the breadcrumb and the
 * browser tab. Cleared on every navigation; a detail view sets it once it has loaded its subject.
 */
import { ref } from 'vue';

export const crumbLabel = ref<string | null>(null);

/** Names the subject of the current detail page. */
export function setCrumb(label: string | null | undefined): void {
  crumbLabel.value = label || null;
}
