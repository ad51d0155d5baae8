// Entry point: mounts the app with its Pinia store.
import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import './styles/globals.css'

createApp(App).use(createPinia()).mount('#app')
