import { createApp } from 'vue';
import App from './App.vue';
import { prefetchFleet } from './features/agents/fleet';
import { router } from './router';
import './ui/global.css';

// Start fetching the fleet with the page itself (a first picture; see prefetchFleet).
if (location.pathname !== '/login') prefetchFleet();
createApp(App).use(router).mount('#app');
